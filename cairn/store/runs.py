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

from cairn.store.blockmap import FANOUT, LEVELS, NodeCache, Tree, diff
from cairn.store.chunks import ZERO


def ingest_increments(cache: NodeCache, parent: Tree | None, new: Tree) -> Counter[bytes]:
    """The runs a new point starts: one per slot where it differs from its parent."""
    counts: Counter[bytes] = Counter()
    for _slot, _old, digest in diff(cache, parent, new):
        if digest is not None and digest != ZERO:
            counts[digest] += 1
    return counts


def delete_decrements(
    cache: NodeCache, prev: Tree | None, cur: Tree, nxt: Tree | None
) -> Counter[bytes]:
    """The runs that end when ``cur`` is deleted from between ``prev`` and ``nxt``."""
    counts: Counter[bytes] = Counter()

    def kids(tree: Tree | None, level: int, index: int, digest: bytes | None) -> list[bytes]:
        if tree is None or digest is None:
            return []
        return cache.children(tree, level, index, digest)

    stack: list[tuple[int, int, bytes | None, bytes | None, bytes | None]] = [
        (LEVELS, 0, prev.root if prev else None, cur.root, nxt.root if nxt else None)
    ]
    while stack:
        level, index, p, c, n = stack.pop()
        if c is not None and c in (p, n):
            continue
        if c is not None and c != ZERO:
            counts[c] += 1
        merged = p is not None and p == n
        if merged and p != ZERO:
            counts[p] += 1
        # Below an absent ``cur`` (it was smaller than a neighbour) the neighbours' runs
        # were split by it and may merge; this only happens where a volume changed size.
        descend = c is not None or (p is not None and n is not None and not (merged and p == ZERO))
        if level == 0 or not descend:
            continue
        kp = kids(prev, level, index, p)
        kc = kids(cur, level, index, c)
        kn = kids(nxt, level, index, n)
        for k in range(max(len(kp), len(kc), len(kn))):
            stack.append((
                level - 1,
                index * FANOUT + k,
                kp[k] if k < len(kp) else None,
                kc[k] if k < len(kc) else None,
                kn[k] if k < len(kn) else None,
            ))
    return counts
