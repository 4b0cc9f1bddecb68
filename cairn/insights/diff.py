"""What changed between the same file system in two recovery points.

Correctness rule: a file is reported unchanged only when it is known to be unchanged, never
because a read was skipped. Content is decided, cheapest proof first:
  1. different kinds or sizes: changed, nothing to read;
  2. zero-length on both sides: unchanged;
  3. the store knows which byte ranges of the volume differ between the two points (from
     their Merkle trees). If both entries list the same extents and none of them meets a
     changed range, every data byte is the same byte on the same unchanged block: unchanged,
     without reading (this holds whatever the metadata says);
  4. otherwise both contents are streamed and compared, stopping at the first difference.
Without changed ranges every same-size file pair is compared byte for byte: slow but exact.

Directories report mode and owner changes only: their size and mtime move whenever a child
is added or removed, which the added/removed lists already say. A rename shows as one path
removed and one added. Change names: "kind", "content", "mode", "owner", "mtime", "target".
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from cairn.insights.fs import DIR, FILE, SYMLINK, Entry, Extents, FileSystem

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Modified:
    path: str
    old: Entry
    new: Entry
    changes: frozenset[str]


@dataclass
class Diff:
    added: list[Entry] = field(default_factory=list)
    removed: list[Entry] = field(default_factory=list)
    modified: list[Modified] = field(default_factory=list)
    files_compared: int = 0
    """How many file pairs had to be read; the rest were settled by size or by extents."""


class ChangedRanges:
    """Sorted, merged byte ranges of a volume that differ between two points."""

    def __init__(self, ranges: Iterable[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for start, length in sorted((s, n) for s, n in ranges if n > 0):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], start + length)
            else:
                merged.append([start, start + length])
        self._starts = [s for s, _ in merged]
        self._ends = [e for _, e in merged]

    def overlaps(self, start: int, length: int) -> bool:
        i = bisect.bisect_left(self._ends, start + 1)
        return i < len(self._starts) and self._starts[i] < start + length

    def within(self, start: int, length: int) -> ChangedRanges:
        """The ranges inside ``[start, start+length)`` of a disk, shifted to a partition."""
        end = start + length
        return ChangedRanges(
            (max(s, start) - start, min(e, end) - max(s, start))
            for s, e in zip(self._starts, self._ends, strict=True)
            if s < end and e > start
        )


def diff(
    old: FileSystem,
    new: FileSystem,
    changed: ChangedRanges | None = None,
    path: str = "/",
) -> Diff:
    """Added, removed and modified entries below `path`, each list sorted by path.

    `changed` are the volume byte ranges that differ between the two points, in the
    coordinates of the volume both file systems were opened on (see `ChangedRanges.within`).
    """
    before = {e.path: e for e in old.walk(path)}
    after = {e.path: e for e in new.walk(path)}
    result = Diff()
    result.removed = [before[p] for p in sorted(before.keys() - after.keys())]
    result.added = [after[p] for p in sorted(after.keys() - before.keys())]
    for p in sorted(before.keys() & after.keys()):
        a, b = before[p], after[p]
        changes = _metadata_changes(a, b)
        if a.kind == FILE == b.kind and _content_differs(old, new, a, b, changed, result):
            changes.add("content")
        if changes:
            result.modified.append(Modified(p, a, b, frozenset(changes)))
    return result


def _metadata_changes(a: Entry, b: Entry) -> set[str]:
    if a.kind != b.kind:
        return {"kind"}
    changes = set()
    if a.permissions != b.permissions:
        changes.add("mode")
    if (a.uid, a.gid) != (b.uid, b.gid):
        changes.add("owner")
    if a.kind != DIR and a.mtime != b.mtime:
        changes.add("mtime")
    if a.kind == SYMLINK and a.link_target != b.link_target:
        changes.add("target")
    return changes


def _content_differs(
    old: FileSystem,
    new: FileSystem,
    a: Entry,
    b: Entry,
    changed: ChangedRanges | None,
    result: Diff,
) -> bool:
    if a.size != b.size:
        return True
    if a.size == 0:
        return False
    if changed is not None and _untouched(a.extents, b.extents, changed):
        return False
    result.files_compared += 1
    with old.open(a.path) as fa, new.open(b.path) as fb:
        while True:
            chunk_a, chunk_b = fa.read(_CHUNK), fb.read(_CHUNK)
            if chunk_a != chunk_b:
                return True
            if not chunk_a:
                return False


def _untouched(a: Extents | None, b: Extents | None, changed: ChangedRanges) -> bool:
    if a is None or a != b:
        return False
    return not any(changed.overlaps(start, length) for start, length in a)
