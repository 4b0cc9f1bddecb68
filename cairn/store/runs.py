"""Reference counts by runs: why deleting any point costs only what that point changed.

Follow one slot of a volume's block map along its points in order: it holds one chunk for
a while, then another. Each maximal stretch of consecutive points holding chunk c in a slot
is a *run*, and a chunk's reference count is its number of live runs over all slots of all
volumes. So:

- a new point adds one run for each slot where it differs from the point before it
  (`ingest_increments`); unchanged slots extend their run and cost nothing;
- deleting point ``cur`` between ``prev`` and ``next`` changes counts only at slots where
  ``cur`` differs from a neighbour (`delete_decrements`):

  ====  ===  ====  =================================================
  prev  cur  next  effect
  ====  ===  ====  =================================================
  a     b    a     the runs of a merge: a -1; b's run vanishes: b -1
  a     b    c     b's run vanishes: b -1
  a     b    b     b's run now starts at next: nothing
  b     b    c     b's run now ends at prev: nothing
  ====  ===  ====  =================================================

An absent neighbour (first or last point) matches nothing. Where ``cur`` equals a
neighbour in an interior slot the whole subtree below is shared with it, so the walk stops
there: its cost follows the slots where ``cur`` differs from both neighbours.
``ZERO`` is never counted: it is never stored.
"""

from __future__ import annotations

from collections import Counter
from itertools import zip_longest

from cairn.store.blockmap import FANOUT, LEVELS, NodeCache, Tree, diff
from cairn.store.chunks import ZERO


def ingest_increments(cache: NodeCache, parent: Tree | None, new: Tree) -> Counter[bytes]:
    """The runs a new point starts: one per slot where it differs from its parent."""
    counts: Counter[bytes] = Counter()
    for _slot, _old, digest in diff(cache, parent, new):
        if digest is not None and digest != ZERO:
            counts[digest] += 1
    return counts


def _settle(counts: Counter[bytes], p: bytes | None, c: bytes | None, n: bytes | None) -> bool:
    """Count the runs that end at one slot when ``c`` goes; returns whether to look below."""
    if c is not None and c in (p, n):
        return False
    if c is not None and c != ZERO:
        counts[c] += 1
    merged = p is not None and p == n
    if merged and p != ZERO:
        counts[p] += 1
    # Below an absent ``cur`` (it was smaller than a neighbour) the neighbours' runs
    # were split by it and may merge; this only happens where a volume changed size.
    return c is not None or (p is not None and n is not None and not (merged and p == ZERO))


def _kids(cache: NodeCache, tree: Tree | None, level: int, index: int,
          digest: bytes | None) -> list[bytes]:
    if tree is None or digest is None:
        return []
    return cache.children(tree, level, index, digest)


def delete_decrements(
    cache: NodeCache, prev: Tree | None, cur: Tree, nxt: Tree | None
) -> Counter[bytes]:
    """The runs that end when ``cur`` is deleted from between ``prev`` and ``nxt``."""
    counts: Counter[bytes] = Counter()
    roots = (prev.root if prev else None, cur.root, nxt.root if nxt else None)
    stack = [(LEVELS, 0, *roots)] if _settle(counts, *roots) else []
    while stack:
        level, index, p, c, n = stack.pop()
        slots = zip_longest(_kids(cache, prev, level, index, p),
                            _kids(cache, cur, level, index, c),
                            _kids(cache, nxt, level, index, n))
        if level == 1:  # leaves: most equal a neighbour, so test before calling
            for lp, lc, ln in slots:
                if lc is None or lc not in (lp, ln):
                    _settle(counts, lp, lc, ln)
            continue
        for k, (kp, kc, kn) in enumerate(slots):
            if _settle(counts, kp, kc, kn):
                stack.append((level - 1, index * FANOUT + k, kp, kc, kn))
    return counts
