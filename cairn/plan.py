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
        """A plan's whole wire form; refuses a torn or unsorted one."""
        reader = PlanReader()
        reader.feed(body)
        return reader.finish()

    def disjoint(self) -> bool:
        """Whether no two ranges overlap or touch and none is empty (merged already)."""
        ends = (o + n for o, n in self)
        return all(self.lengths) and all(end < o for end, o in zip(ends, self.offsets[1:],
                                                                   strict=False))

    @classmethod
    def merged(cls, ranges: Iterable[tuple[int, int]]) -> Ranges:
        """``ranges`` (sorted by offset) with those that overlap or touch joined and empty
        ones dropped: ``ranges`` itself when it is `Ranges` merged already."""
        if isinstance(ranges, Ranges) and ranges.disjoint():
            return ranges
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


class PlanReader:
    """A plan's wire form as it arrives in pieces, straight into `Ranges`: the body is
    never held whole."""

    def __init__(self) -> None:
        self.ranges = Ranges(array("Q"), array("Q"))
        self._rest = b""

    def feed(self, piece: bytes) -> None:
        data = self._rest + piece
        whole = len(data) - len(data) % RANGE_BYTES
        flat = array("Q", data[:whole])
        self._rest = data[whole:]
        if sys.byteorder == "little":
            flat.byteswap()
        offsets = flat[0::2]
        last = self.ranges.offsets[-1:] or array("Q", [0])
        if any(a > b for a, b in pairwise(last + offsets)):
            raise UsageError("a binary plan's ranges must be sorted by offset")
        self.ranges.offsets.extend(offsets)
        self.ranges.lengths.extend(flat[1::2])

    def finish(self) -> Ranges:
        if self._rest:
            raise UsageError(f"a binary plan is {RANGE_BYTES} bytes per range (offset, length: "
                             "u64, big endian); the body ends inside one")
        return self.ranges


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
