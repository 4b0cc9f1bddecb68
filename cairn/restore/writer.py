"""Write a whole point to a file or a block device, as fast as the disk allows.

Files are written sparse: holes are never written, the file is cut to size first. A block
device may hold old data, so its holes are zeroed explicitly. Chunks are read in the order
the store keeps them (`ChunkStore.get_many`: for packs, disk order, neighbours in one read),
each checked against its hash on the store's reading threads, and written with
``os.pwrite`` wherever the point uses them: a chunk used by several blocks is read once.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cairn.errors import DestinationError, StorageFull
from cairn.store.chunks import ZERO
from cairn.store.reader import PointReader

# Blocks planned at once: their chunks are read in the order the store keeps them, not in
# disk order. 65536 blocks (4 GiB of a volume) keep the plan a few MiB whatever the size.
WINDOW = 65536


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


def restore_image(reader: PointReader, dest: Path,
                  progress: Callable[[int], None] | None = None) -> None:
    point = reader.point
    fd, is_device = _open_destination(dest, point.size, point.allocated)
    bs = reader.block_size
    zero = bytes(bs)
    where: dict[bytes, list[int]] = {}  # chunk -> the blocks of this window that hold it

    def write(digest: bytes, data: bytes) -> int:
        for index in where[digest]:
            os.pwrite(fd, data, index * bs)
        return len(data) * len(where[digest])

    try:
        for start in range(0, reader.tree.blocks, WINDOW):
            where.clear()
            holes = 0
            for index, digest in reader.block_hashes(start, min(start + WINDOW,
                                                                reader.tree.blocks)):
                if digest != ZERO:
                    where.setdefault(digest, []).append(index)
                    continue
                length = min(bs, point.size - index * bs)
                holes += length
                if is_device:
                    os.pwrite(fd, zero[:length], index * bs)
            if progress and holes:
                progress(holes)
            for done in reader.repo.chunks.get_many(list(where), write):
                if progress:
                    progress(done)
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(str(dest)) from None
        raise
    finally:
        os.close(fd)
