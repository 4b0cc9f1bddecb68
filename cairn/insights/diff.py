"""What changed between the same file system in two recovery points.

Correctness rule: a file is reported unchanged only when it is known to be unchanged, never
because a read was skipped. Content is decided, cheapest proof first:
  1. different kinds or sizes: changed, nothing to read;
  2. zero-length on both sides: unchanged;
  3. the store knows which byte ranges of the volume differ between the two points (from
     their Merkle trees). If both entries list the same extents (holes in the same places)
     and none of them meets a changed range, every data byte is the same byte on the same
     unchanged block: unchanged, without reading (this holds whatever the metadata says);
  4. where the file system's extents are the content (`FileSystem.plain_extents`) and cover
     the file, the volume is read directly, not through the file-system library: with the
     same extents, only the pieces of the file that lie on changed ranges can differ, so
     exactly those are read on both sides; with different extents (a file rewritten
     elsewhere) both files are read whole from their extents;
  5. otherwise both contents are streamed through the library and compared.
Reads stop at the first difference. Without changed ranges every same-size file pair is
compared byte for byte: slow but exact.

Directories report mode and owner changes only: their size and mtime move whenever a child
is added or removed, which the added/removed lists already say. A rename shows as one path
removed and one added. Change names: "kind", "content", "mode", "owner", "mtime", "target".
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from cairn.errors import DamagedFileSystem
from cairn.insights.fs import DIR, FILE, HOLE, SYMLINK, Entry, Extents, FileSystem

_CHUNK = 1 << 20

Layout = list[tuple[int, int, int]]
"""A file's content as pieces ``(file offset, volume offset or HOLE, length)``, cut at its
size: what `FileSystem.plain_extents` promises its extents are."""


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

    def meeting(self, start: int, length: int) -> list[tuple[int, int]]:
        """The parts of ``[start, start+length)`` that lie on changed ranges."""
        end = start + length
        parts = []
        for i in range(bisect.bisect_left(self._ends, start + 1), len(self._starts)):
            if self._starts[i] >= end:
                break
            lo = max(self._starts[i], start)
            parts.append((lo, min(self._ends[i], end) - lo))
        return parts

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
    layout_a, layout_b = _layout(old, a), _layout(new, b)
    if layout_a is not None and layout_b is not None:
        if changed is not None and a.extents == b.extents:
            spans = _changed_spans(layout_a, changed)
        else:
            spans = [(s, min(_CHUNK, a.size - s)) for s in range(0, a.size, _CHUNK)]
        if not spans:
            return False
        result.files_compared += 1
        return any(
            _read(old, layout_a, start, length, a) != _read(new, layout_b, start, length, b)
            for start, length in spans
        )
    if changed is not None and _untouched(a.extents, b.extents, changed):
        return False
    result.files_compared += 1
    return _streams_differ(old, new, a, b)


def _streams_differ(old: FileSystem, new: FileSystem, a: Entry, b: Entry) -> bool:
    """Compare two files by reading both, for file systems whose layout is not known."""
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
    return not any(changed.overlaps(start, n) for start, n in a if start != HOLE)


def _layout(fs: FileSystem, entry: Entry) -> Layout | None:
    """Where each byte of the file lies, or None when its extents are not its content or do
    not reach its size (then only the library knows where the rest is)."""
    if not fs.plain_extents or entry.extents is None:
        return None
    pieces = []
    position = 0
    for offset, length in entry.extents:
        if position >= entry.size:
            break
        pieces.append((position, offset, min(length, entry.size - position)))
        position += length
    return pieces if position >= entry.size else None


def _changed_spans(layout: Layout, changed: ChangedRanges) -> list[tuple[int, int]]:
    """The parts of the file (offset, length) stored on changed ranges, in pieces of at most
    _CHUNK bytes: with the same layout on both sides, no other byte can differ."""
    spans = []
    for position, offset, length in layout:
        if offset == HOLE:
            continue
        for start, n in changed.meeting(offset, length):
            first = position + start - offset
            spans += [(s, min(_CHUNK, first + n - s)) for s in range(first, first + n, _CHUNK)]
    return spans


def _read(fs: FileSystem, layout: Layout, start: int, length: int, entry: Entry) -> bytes:
    """The file's bytes ``[start, start+length)``, read from the volume."""
    end = start + length
    parts = []
    first = max(0, bisect.bisect_right(layout, start, key=lambda piece: piece[0]) - 1)
    for position, offset, n in layout[first:]:
        if position >= end:
            break
        lo, hi = max(start, position), min(end, position + n)
        if lo >= hi:
            continue
        if offset == HOLE:
            parts.append(bytes(hi - lo))
            continue
        data = fs.reader.pread(offset + lo - position, hi - lo)
        if len(data) != hi - lo:
            raise DamagedFileSystem(
                f"{entry.path}: its data lies beyond the end of the volume ({fs.kind})"
            )
        parts.append(data)
    return b"".join(parts)
