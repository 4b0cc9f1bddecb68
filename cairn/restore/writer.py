"""Write a whole point to a file or a block device, as fast as the disk allows.

Files are written sparse: holes are never written, the file is cut to size first. A block
device may hold old data, so its holes are zeroed explicitly. The work is split by level-1
node (512 blocks) over a thread pool; each worker fetches, checks and writes its blocks
with ``os.pwrite`` (no shared offset), and every chunk's hash is checked on the way.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cairn.errors import DestinationError, StorageFull
from cairn.store.blockmap import FANOUT
from cairn.store.chunks import ZERO
from cairn.store.reader import PointReader

WORKERS = max(2, min(8, os.cpu_count() or 2))


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

    def write_group(group: int) -> int:
        start = group * FANOUT
        stop = min(start + FANOUT, reader.tree.blocks)
        for index, digest in reader.block_hashes(start, stop):
            length = min(bs, point.size - index * bs)
            if digest == ZERO:
                if is_device:
                    os.pwrite(fd, zero[:length], index * bs)
                continue
            os.pwrite(fd, reader.block(digest, length), index * bs)
        return (stop - start) * bs

    workers = WORKERS * 4 if reader.repo.remote is not None else WORKERS  # slow requests
    try:
        with ThreadPoolExecutor(workers) as pool:
            for done in pool.map(write_group, reader.node_groups()):
                if progress:
                    progress(done)
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(str(dest)) from None
        raise
    finally:
        os.close(fd)
