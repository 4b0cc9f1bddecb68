"""Uploads in flight: received ranges in a sparse spool file, then one `Ingest` at commit.

The agent sends frames (`cairn.frames`); they are idempotent (writing one twice leaves the
same spool), so an agent whose connection dropped simply sends again whatever it is not sure
arrived. The appliance remembers each frame's BLAKE3 so a resumed agent can skip the frames
it would send with identical content.

The spool is the truth for the bytes of the ranges the agent's commit lists, the parent
point for all others (or zeros on a full upload). `SpoolSource` presents exactly that as a
store `Source`, so `Ingest` reads only the changed ranges and shares everything else with
the parent: the point is whole, yet the appliance stored and read only what changed.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from cairn.plan import Extents, Ranges
from cairn.store.reader import PointReader


class Spool:
    """The sparse file holding what one upload received so far."""

    def __init__(self, directory: Path, upload_id: str, size: int) -> None:
        self.path = directory / f"{upload_id}.spool"
        directory.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(self.fd).st_size != size:
            os.ftruncate(self.fd, size)

    def write(self, parts: list[tuple[int, memoryview]]) -> None:
        """Write each ``(offset, data)``; durable only after `sync`."""
        for offset, data in parts:
            os.pwrite(self.fd, data, offset)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def pread(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def remove(directory: Path, upload_id: str) -> None:
        (directory / f"{upload_id}.spool").unlink(missing_ok=True)


def coalesce(ranges: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Ranges sorted by offset, with those that overlap or touch joined, as they come."""
    current: tuple[int, int] | None = None
    for offset, length in ranges:
        if length <= 0:
            continue
        if current is not None and offset <= current[0] + current[1]:
            end = max(current[0] + current[1], offset + length)
            current = (current[0], end - current[0])
            continue
        if current is not None:
            yield current
        current = (offset, length)
    if current is not None:
        yield current


def uncovered(wanted: Iterable[tuple[int, int]], have: Iterable[tuple[int, int]]
              ) -> Iterator[tuple[int, int]]:
    """The parts of ``wanted`` that ``have`` does not cover (both merged and sorted);
    ``have`` is read once, in step, so it may stream from the database."""
    covering = iter(have)
    cover = next(covering, None)
    for offset, length in wanted:
        pos, end = offset, offset + length
        while pos < end:
            while cover is not None and cover[0] + cover[1] <= pos:
                cover = next(covering, None)
            if cover is not None and cover[0] <= pos:
                pos = min(end, cover[0] + cover[1])
                continue
            stop = end if cover is None else min(end, cover[0])
            yield pos, stop - pos
            pos = stop


class SpoolSource:
    """A volume image: ``changed`` ranges from the spool, the rest from the parent point."""

    def __init__(self, spool: Spool, size: int, changed: Ranges,
                 parent: PointReader | None, name: str) -> None:
        """``changed``: merged and sorted (`Ranges.merged`)."""
        self.spool = spool
        self._size = size
        self.changed = changed
        self._starts = changed.offsets
        self.parent = parent
        self._name = name

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return self._name

    def data_extents(self) -> Sequence[tuple[int, int]]:
        """Where data may be: anywhere with a parent, else only what the agent sent."""
        if self.parent is not None:
            return [(0, self._size)]
        return Extents(self.changed)

    def pread(self, offset: int, length: int) -> bytes:
        end = offset + length
        if self.parent is not None and offset < self.parent.size:
            base = bytearray(self.parent.pread(offset, min(end, self.parent.size) - offset))
            base.extend(bytes(length - len(base)))
        else:
            base = bytearray(length)
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while i < len(self.changed) and self.changed[i][0] < end:
            start, n = self.changed[i]
            lo, hi = max(start, offset), min(start + n, end)
            if lo < hi:
                base[lo - offset : hi - offset] = self.spool.pread(lo, hi - lo)
            i += 1
        return bytes(base)
