"""A commit's plan: the byte ranges an upload changes, its wire form shared by the agent
(`encode`) and the appliance (`Ranges`), held in two arrays.

As JSON (``{"ranges": [[offset, length], ...], "full": false}``) a plan costs about 300
bytes of memory per range once parsed and checked: a 59 MiB body of 4 million ranges took
the appliance from 85 MB to 1.3 GB. So a JSON plan is capped at JSON_PLAN bytes, and a
larger one comes as ``application/octet-stream`` (``?full=true`` for a full upload): 16
bytes per range, offset and length (u64, big endian), sorted by offset. Held as `Ranges`,
it costs those 16 bytes a range, merged included.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from itertools import pairwise
from typing import overload

from cairn.errors import UsageError

RANGE_BYTES = 16
JSON_PLAN = 1024 * 1024


def encode(ranges: Iterable[Sequence[int]]) -> bytes:
    """The wire form of ``(offset, length)`` ranges, sorted as the appliance wants them."""
    flat = array("Q", (int(v) for r in sorted(ranges) for v in r[:2]))
    if sys.byteorder == "little":
        flat.byteswap()
    return flat.tobytes()


class Ranges(Sequence[tuple[int, int]]):
    """``(offset, length)`` pairs sorted by offset, 16 bytes each."""

    def __init__(self, offsets: array[int], lengths: array[int]) -> None:
        self.offsets = offsets
        self.lengths = lengths

    @classmethod
    def parse(cls, body: bytes) -> Ranges:
        """A plan's wire form; refuses a torn or unsorted one."""
        if len(body) % RANGE_BYTES:
            raise UsageError(f"a binary plan is {RANGE_BYTES} bytes per range (offset, length: "
                             f"u64, big endian); {len(body)} bytes is not")
        flat = array("Q", body)
        if sys.byteorder == "little":
            flat.byteswap()
        ranges = cls(flat[0::2], flat[1::2])
        del flat
        if any(a > b for a, b in pairwise(ranges.offsets)):
            raise UsageError("a binary plan's ranges must be sorted by offset")
        return ranges

    @classmethod
    def merged(cls, ranges: Iterable[tuple[int, int]]) -> Ranges:
        """``ranges`` (sorted by offset) with those that overlap or touch joined and empty
        ones dropped."""
        offsets, lengths = array("Q"), array("Q")
        for offset, length in ranges:
            if length <= 0:
                continue
            if offsets and offset <= offsets[-1] + lengths[-1]:
                lengths[-1] = max(offsets[-1] + lengths[-1], offset + length) - offsets[-1]
            else:
                offsets.append(offset)
                lengths.append(length)
        return cls(offsets, lengths)

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, index: int) -> tuple[int, int]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[int, int]]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, int] | Sequence[tuple[int, int]]:
        if isinstance(index, slice):
            return Ranges(self.offsets[index], self.lengths[index])
        return self.offsets[index], self.lengths[index]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return zip(self.offsets, self.lengths, strict=True)


class Extents(Sequence[tuple[int, int]]):
    """`Ranges` seen as ``(start, end)``, for a source's ``data_extents``."""

    def __init__(self, ranges: Ranges) -> None:
        self.ranges = ranges

    def __len__(self) -> int:
        return len(self.ranges)

    @overload
    def __getitem__(self, index: int) -> tuple[int, int]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[int, int]]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, int] | Sequence[tuple[int, int]]:
        if isinstance(index, slice):
            return [(o, o + n) for o, n in self.ranges[index]]
        offset, length = self.ranges[index]
        return offset, offset + length
