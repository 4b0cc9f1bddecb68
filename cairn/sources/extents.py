"""Linux ioctls for change tracking: FIEMAP (where a file's bytes live) and FICLONE (reflink).

A reflink copy shares every extent with its source until one side is written; a write
then lands in a new extent (copy on write). So between two reflink snapshots of an image,
the byte ranges whose physical location differs are exactly the ranges written in between
(plus, rarely, ranges the file system moved by itself: harmless extra reads). Works on
btrfs and XFS (``reflink=1``); elsewhere `clone` raises `NoReflink` and the agent falls
back to a full scan.

``struct fiemap`` (linux/fiemap.h): u64 start, u64 length, u32 flags, u32 mapped_extents,
u32 extent_count, u32 reserved, then ``extent_count`` of ``struct fiemap_extent``:
u64 logical, u64 physical, u64 length, u64 reserved[2], u32 flags, u32 reserved[3].
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import struct
from dataclasses import dataclass
from pathlib import Path

FS_IOC_FIEMAP = 0xC020660B
FICLONE = 0x40049409
FIEMAP_FLAG_SYNC = 0x1
EXTENT_LAST = 0x1
# Extents whose physical address says nothing stable about their content.
EXTENT_UNSTABLE = 0x2 | 0x4 | 0x200 | 0x400  # unknown, delalloc, data inline, data tail
EXTENT_UNWRITTEN = 0x800
_HEADER = struct.Struct("=QQIIII")
_EXTENT = struct.Struct("=QQQQQIIII")
_BATCH = 512


class NoReflink(OSError):
    """The file system cannot clone this file (not btrfs/XFS, or across file systems)."""


@dataclass(frozen=True)
class Extent:
    logical: int
    physical: int
    length: int
    flags: int


def fiemap(fd: int) -> list[Extent]:
    """Every extent of the open file, in logical order (holes are simply absent)."""
    extents: list[Extent] = []
    start = 0
    while True:
        buf = bytearray(_HEADER.size + _EXTENT.size * _BATCH)
        _HEADER.pack_into(buf, 0, start, (1 << 64) - 1 - start, FIEMAP_FLAG_SYNC, 0, _BATCH, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
        mapped = _HEADER.unpack_from(buf, 0)[3]
        if mapped == 0:
            return extents
        last = False
        for i in range(mapped):
            logical, physical, length, _, _, flags, _, _, _ = _EXTENT.unpack_from(
                buf, _HEADER.size + i * _EXTENT.size)
            extents.append(Extent(logical, physical, length, flags))
            last = bool(flags & EXTENT_LAST)
        if last:
            return extents
        start = extents[-1].logical + extents[-1].length


def clone(source: Path, target: Path) -> None:
    """Make ``target`` a new reflink copy of ``source`` (atomic for the file's contents).

    ``target`` sits beside user data, where another local user may plant a symlink: the
    agent (root) removes whatever is there and creates the file itself, refusing to follow
    or reuse anything (``O_EXCL|O_NOFOLLOW``), so it never truncates a file it did not make.
    """
    src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    try:
        target.unlink(missing_ok=True)
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                      | os.O_CLOEXEC, 0o600)
        try:
            fcntl.ioctl(dst, FICLONE, src)
        except OSError as exc:
            os.close(dst)
            dst = -1
            target.unlink(missing_ok=True)
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL,
                             errno.ENOSYS, errno.EPERM):
                raise NoReflink(exc.errno, f"cannot reflink {source}: {exc.strerror}") from None
            raise
        finally:
            if dst >= 0:
                os.close(dst)
    finally:
        os.close(src)


def _locate(extents: list[Extent], pos: int, start: int) -> tuple[int, Extent | None]:
    """From index ``start``, the extent covering ``pos`` (or None) and the next index."""
    i = start
    while i < len(extents) and extents[i].logical + extents[i].length <= pos:
        i += 1
    if i < len(extents) and extents[i].logical <= pos:
        return i, extents[i]
    return i, None


def changed_ranges(old: list[Extent], new: list[Extent], size: int) -> list[tuple[int, int]]:
    """Byte ranges of ``[0, size)`` whose content may differ between the two mappings.

    A range is unchanged when both map it to the same physical bytes with stable flags, or
    when both have a hole (or an unwritten extent, which reads as zeros) there.
    """
    cuts = {0, size}
    for e in (*old, *new):
        cuts.update(p for p in (e.logical, e.logical + e.length) if 0 < p < size)
    points = sorted(cuts)
    out: list[tuple[int, int]] = []
    i = j = 0
    for a, b in itertools.pairwise(points):
        i, x = _locate(old, a, i)
        j, y = _locate(new, a, j)
        zero_x = x is None or bool(x.flags & EXTENT_UNWRITTEN)
        zero_y = y is None or bool(y.flags & EXTENT_UNWRITTEN)
        if zero_x and zero_y:
            continue
        if (x is not None and y is not None and not zero_x and not zero_y
                and not (x.flags | y.flags) & EXTENT_UNSTABLE
                and x.physical + (a - x.logical) == y.physical + (a - y.logical)):
            continue
        if out and out[-1][0] + out[-1][1] == a:
            out[-1] = (out[-1][0], b - out[-1][0])
        else:
            out.append((a, b - a))
    return out


def data_ranges(extents: list[Extent], size: int) -> list[tuple[int, int]]:
    """The ranges that may hold non-zero bytes (written extents), clipped to ``size``."""
    out: list[tuple[int, int]] = []
    for e in extents:
        if e.flags & EXTENT_UNWRITTEN or e.logical >= size:
            continue
        end = min(e.logical + e.length, size)
        if out and out[-1][0] + out[-1][1] >= e.logical:
            out[-1] = (out[-1][0], max(end, out[-1][0] + out[-1][1]) - out[-1][0])
        else:
            out.append((e.logical, end - e.logical))
    return out
