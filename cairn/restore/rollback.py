"""Rapid rollback: put a point back onto the disk it came from, writing only what differs.

A disk that went bad a little (ransomware, a failed upgrade) still holds most of the point.
Reading is cheaper than writing and far cheaper than moving data over a network, so the
target is read block by block, each block hashed with the repository's own hash and
compared with the point's block map; only blocks that differ are fetched from the store and
written. A block that is a hole in the point is compared with zeros, with no hash at all.
The result is bit-identical to the point over the point's size; bytes past it (a larger
target) are left as they are.

With a change tracker's ranges since the point (the byte ranges written on the target
after the point was taken: a dirty bitmap, a CBT list), only the blocks those ranges touch
are read and compared, so a rollback of a big disk that changed a little reads a little
too. The tracker is trusted: a change it missed is not seen and stays on the target. Its
list is the same JSON as `cairn backup --changed-ranges` and must lie within the target;
ranges past the point's size are ignored (that part of the disk is not the point's).

Refused before anything is written: a target smaller than the point, a block device that is
mounted or otherwise held (opened ``O_EXCL``, which the kernel refuses while it is in use),
and an image file attached to a loop device (which may be mounted). A rollback asked for
over the REST API is further confined by a `TargetPolicy` (`rollback_targets`).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.errors import DestinationError, StorageFull
from cairn.restore.rollback_targets import TargetPolicy, check_target
from cairn.sources.image import check_changed_ranges, load_changed_ranges
from cairn.store.chunks import ZERO
from cairn.store.ingest import blocks_of_ranges
from cairn.store.reader import PointReader

WINDOW_BLOCKS = 64
WORKERS = max(2, min(8, os.cpu_count() or 2))
_LOOPS = Path("/sys/block")


@dataclass(frozen=True)
class RollbackResult:
    point: str
    target: str
    size: int
    blocks_differing: int
    bytes_read: int
    bytes_written: int
    seconds: float


def open_target(target: Path, size: int, policy: TargetPolicy | None = None) -> int:
    """Open the rollback target read-write, refusing what must not be written (and, with a
    ``policy``, what it does not allow: judged on what was opened, so no symlink swap can
    slip past it)."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        raise DestinationError(f"{target} does not exist: rollback writes onto an existing "
                               "disk or image; use `cairn restore` for a new one") from None
    if stat.S_ISBLK(st.st_mode):
        flags = os.O_RDWR | os.O_EXCL | os.O_CLOEXEC
    elif stat.S_ISREG(st.st_mode):
        _refuse_loop_backed(target)
        flags = os.O_RDWR | os.O_CLOEXEC
    else:
        raise DestinationError(f"{target} is neither a block device nor an image file")
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise DestinationError(f"{target} is mounted or in use: unmount it (and stop what "
                                   "holds it), then roll back") from None
        raise DestinationError(f"cannot open {target}: {exc.strerror}") from None
    try:
        if policy is not None:
            check_target(target, fd, policy)
        capacity = os.lseek(fd, 0, os.SEEK_END)
        if capacity < size:
            raise DestinationError(f"{target} holds {capacity} bytes but the point needs "
                                   f"{size}: roll back onto a disk at least that large")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_loop_backed(target: Path) -> None:
    real = os.path.realpath(target)
    for backing in _LOOPS.glob("loop*/loop/backing_file"):
        try:
            name = backing.read_text().strip().removesuffix(" (deleted)")
        except OSError:
            continue
        if name == real:
            device = backing.parent.parent.name
            raise DestinationError(f"{target} is attached to /dev/{device} and may be "
                                   f"mounted: unmount it and `losetup -d /dev/{device}` first")


def rollback(reader: PointReader, target: Path, changed_ranges: Path | list[Any] | None = None,
             policy: TargetPolicy | None = None) -> RollbackResult:
    """Make ``target`` equal to the point over its size, writing only differing blocks;
    with ``changed_ranges`` (a tracker's JSON file, or its list as parsed, from the REST
    API), reading only the blocks it names. ``policy`` confines the target (the REST API's);
    without one (root's `cairn rollback`) only the checks of `open_target` apply."""
    started = time.monotonic()
    fd = open_target(target, reader.size, policy)
    try:
        windows = _windows(reader, fd, target, changed_ranges)
        with ThreadPoolExecutor(WORKERS) as pool:
            results = list(pool.map(lambda w: _window(reader, fd, *w), windows))
        os.fsync(fd)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StorageFull(str(target)) from None
        raise DestinationError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return RollbackResult(reader.point.id, str(target), reader.size,
                          sum(r.differing for r in results), sum(r.read for r in results),
                          sum(r.written for r in results), round(time.monotonic() - started, 3))


def _windows(reader: PointReader, fd: int, target: Path,
             changed_ranges: Path | list[Any] | None) -> list[tuple[int, int]]:
    """The runs of blocks to compare, ``(first, stop)``, at most WINDOW_BLOCKS each: all of
    the point's, or the runs of those the tracker's ranges touch."""
    bs = reader.block_size
    blocks = -(-reader.size // bs)
    if changed_ranges is None:
        return [(first, min(first + WINDOW_BLOCKS, blocks))
                for first in range(0, blocks, WINDOW_BLOCKS)]
    capacity = os.lseek(fd, 0, os.SEEK_END)
    within = f"the target {target}"
    ranges = (check_changed_ranges(changed_ranges, capacity, "changed_ranges", within)
              if isinstance(changed_ranges, list) else
              load_changed_ranges(changed_ranges, capacity, within))
    runs: list[tuple[int, int]] = []
    for block in blocks_of_ranges(ranges, bs, reader.size):
        if runs and runs[-1][1] == block and block - runs[-1][0] < WINDOW_BLOCKS:
            runs[-1] = (runs[-1][0], block + 1)
        else:
            runs.append((block, block + 1))
    return runs


@dataclass(frozen=True)
class _Fixed:
    differing: int
    read: int
    written: int


def _window(reader: PointReader, fd: int, first: int, last: int) -> _Fixed:
    """Compare and fix blocks ``first..last`` (exclusive); the differing blocks' chunks
    are fetched in one batch, each written wherever the window uses it."""
    bs = reader.block_size
    offset = first * bs
    current = memoryview(os.pread(fd, min(last * bs, reader.size) - offset, offset))
    hash_of = reader.repo.chunks.hash
    zeroed: list[int] = []
    fetch: dict[bytes, list[int]] = {}
    for index, digest in reader.block_hashes(first, last):
        start = (index - first) * bs
        block = current[start:start + bs]
        if digest == ZERO:
            if block != bytes(len(block)):
                zeroed.append(index)
        elif hash_of(block) != digest:
            fetch.setdefault(digest, []).append(index)
    written = 0
    for index in zeroed:
        written += os.pwrite(fd, bytes(min(bs, reader.size - index * bs)), index * bs)
    for digest, data in reader.repo.chunks.get_many(list(fetch), lambda d, data: (d, data)):
        for index in fetch[digest]:
            written += os.pwrite(fd, data, index * bs)
    return _Fixed(len(zeroed) + sum(map(len, fetch.values())), len(current), written)
