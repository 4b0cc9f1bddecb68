"""Write a whole point to a file or a block device, as fast as the disk allows.

Files are written sparse: holes are never written, the file is cut to size first. A block
device may hold old data, so its holes are zeroed explicitly. Chunks are read in the order
the store keeps them (`ChunkStore.get_many`: for packs, disk order, neighbours in one read),
each checked against its hash on the store's reading threads, and written with
``os.pwrite`` wherever the point uses them: a chunk used by several blocks is read once.
A damaged point restores everything it still holds: lost blocks are zeros, named.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from cairn.errors import Corruption, DamagedPoint, DestinationError, StorageFull
from cairn.store.chunks import ZERO
from cairn.store.reader import PointReader
from cairn.store.repository import tolerant_nodes

# Blocks planned at once: their chunks are read in the order the store keeps them, not in
# disk order. 65536 blocks (4 GiB of a volume) keep the plan a few MiB whatever the size.
WINDOW = 65536
WRITEBACK = 64 << 20
"""bytes written between two starts of their write-back (`_Target.write`)"""


def _open_destination(dest: Path, size: int, allocated: int) -> tuple[int, bool]:
    """Open ``dest`` for writing; returns (fd, is_block_device)."""
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISBLK(st.st_mode):
        fd = os.open(dest, os.O_WRONLY | os.O_CLOEXEC)
        capacity = os.lseek(fd, 0, os.SEEK_END)
        if capacity < size:
            os.close(fd)
            raise DestinationError(f"destination {dest} holds {capacity} bytes but the point "
                                   f"needs {size}: use a device at least that large")
        return fd, True
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise DestinationError(f"destination {dest} is neither a file nor a block device")
    parent = dest.parent if str(dest.parent) else Path(".")
    if not parent.is_dir():
        raise DestinationError(f"folder {parent} does not exist: create it first")
    free = os.statvfs(parent)
    if free.f_bavail * free.f_frsize < allocated:
        raise DestinationError(f"destination {parent} has "
                               f"{free.f_bavail * free.f_frsize} bytes free but the point holds "
                               f"{allocated} bytes of data: free space or restore elsewhere")
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DestinationError(f"cannot write {dest}: {exc.strerror}") from None
    os.ftruncate(fd, size)
    return fd, False


def _spans(blocks: list[int]) -> list[tuple[int, int]]:
    """Sorted block numbers as ``(first, last)`` runs."""
    spans: list[tuple[int, int]] = []
    for b in sorted(blocks):
        if spans and spans[-1][1] == b - 1:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((b, b))
    return spans


def describe_lost(lost: list[tuple[int, int]], block_size: int) -> str:
    """Lost block runs in words: ``blocks 3-5 (bytes 196608-393215), ...``."""
    shown = [f"{a}-{b}" if a != b else str(a) for a, b in lost[:8]]
    more = f" and {len(lost) - 8} more run(s)" if len(lost) > 8 else ""
    count = sum(b - a + 1 for a, b in lost)
    return (f"{count} block(s) of {block_size} bytes: {', '.join(shown)}{more}")


class _Window:
    """The blocks of one window of a point and the chunks they need, read past damage:
    a block whose map node or chunk is damaged or missing is *lost*, never a stop."""

    def __init__(self, reader: PointReader, start: int, stop: int) -> None:
        self.reader = reader
        self.where: dict[bytes, list[int]] = {}
        self.holes: list[int] = []
        self.lost: list[int] = []
        self.why = ""  # the first damage met, in the store's words
        try:
            hashes = list(reader.block_hashes(start, stop))
        except Corruption as exc:  # a damaged node: what it covers is lost
            self.why = str(exc)
            hashes = list(tolerant_nodes(reader.repo).leaves(reader.tree, start, stop))
            seen = {i for i, _ in hashes}
            self.lost = [i for i in range(start, stop) if i not in seen]
        for index, digest in hashes:
            if digest == ZERO:
                self.holes.append(index)
            else:
                self.where.setdefault(digest, []).append(index)

    def read(self, write: Callable[[bytes, bytes], int]) -> Iterator[int]:
        """``write`` each intact chunk, yielding its result; damaged ones become lost."""
        left = dict(self.where)
        done: set[bytes] = set()

        def each(digest: bytes, data: bytes) -> int:
            done.add(digest)
            return write(digest, data)

        chunks = self.reader.repo.chunks
        while left:
            try:
                yield from chunks.get_many(list(left), each)
                return
            except Corruption as exc:
                for digest in done:
                    left.pop(digest, None)
                done.clear()
                if exc.digest not in left:
                    raise
                self.lost += left.pop(exc.digest)
                self.why = self.why or str(exc)


class _Target:
    """The open destination: blocks written where their chunk's bytes belong, zeros where
    a hole or a lost block may meet old data (a block device; a new file reads as zeros).

    What is written goes to the disk as the restore runs, not all at the closing fsync:
    every WRITEBACK bytes the kernel is told to start writing the file back and to drop
    the pages once written (``POSIX_FADV_DONTNEED``: Linux starts the write-back and waits
    for nothing). Left to itself it holds up to a tenth of memory dirty, so a 2 GiB restore
    wrote nothing until its fsync, which took 1.1-1.4 s after the last chunk; the disk
    now writes while chunks are fetched and checked (a cloud restore waits on the network
    meanwhile), and the restore no longer fills the page cache with its image. Errors of
    the write-back are still the fsync's to report."""

    def __init__(self, fd: int, is_device: bool, block_size: int, size: int) -> None:
        self.fd, self.is_device, self.bs, self.size = fd, is_device, block_size, size
        self.window: _Window | None = None
        self._unflushed = 0
        self._lock = threading.Lock()

    def write(self, digest: bytes, data: bytes) -> int:
        assert self.window is not None
        where = self.window.where[digest]
        for index in where:
            os.pwrite(self.fd, data, index * self.bs)
        written = len(data) * len(where)
        with self._lock:
            self._unflushed += written
            flush = self._unflushed >= WRITEBACK
            if flush:
                self._unflushed = 0
        if flush:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return written

    def blank(self, blocks: list[int]) -> int:
        """Zero ``blocks`` where the destination may hold old data; returns their bytes."""
        total = 0
        for index in blocks:
            length = min(self.bs, self.size - index * self.bs)
            total += length
            if self.is_device:
                os.pwrite(self.fd, bytes(length), index * self.bs)
        return total


def _copy(reader: PointReader, target: _Target,
          progress: Callable[[int], None]) -> tuple[list[int], str]:
    """Every block of the point into ``target``; returns the lost blocks and why."""
    lost: list[int] = []
    why = ""
    for start in range(0, reader.tree.blocks, WINDOW):
        window = target.window = _Window(reader, start, min(start + WINDOW, reader.tree.blocks))
        progress(target.blank(window.holes))
        for done in window.read(target.write):
            progress(done)
        target.blank(window.lost)
        lost += window.lost
        why = why or window.why
    return lost, why


def restore_image(reader: PointReader, dest: Path,
                  progress: Callable[[int], None] | None = None,
                  ignore_damage: bool = False) -> list[tuple[int, int]]:
    """Write ``reader``'s point to ``dest``; returns the lost block runs ``(first, last)``.

    Damage is read past, never a stop: a lost block (its chunk or map node is damaged or
    missing) is left as zeros, and at the end the restore fails naming every lost block,
    unless ``ignore_damage``, when the lost blocks are returned for the caller to list.
    """
    point = reader.point
    fd, is_device = _open_destination(dest, point.size, point.allocated)
    try:
        lost, why = _copy(reader, _Target(fd, is_device, reader.block_size, point.size),
                          progress or (lambda _n: None))
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(str(dest)) from None
        raise
    finally:
        os.close(fd)
        reader.repo.record_damage()
    spans = _spans(lost)
    if spans and not ignore_damage:
        raise DamagedPoint(f"point {point.id} is damaged: {describe_lost(spans, reader.block_size)}"
                           f" cannot be read ({why}; written as zeros in {dest}); run `cairn "
                           "restore --ignore-damage` to accept that, or `cairn verify` for "
                           "details")
    return spans
