"""Space held back so that a full disk never locks the user out of their repository.

SQLite needs room to open a database in WAL mode (its shared-memory file) and to commit
(its write-ahead log). On a full file system even ``cairn points`` would fail, and so would
the ``delete`` and ``prune`` that free space. So a repository keeps a *reserve* file,
``<repo>/reserve``, of a 32nd of its file system (between 1 and 32 MiB). When a command
opens the repository and finds less free than half the reserve, the reserve is released:
the catalog can then be read, and a delete or prune can commit and give space back. It is
made again by the first command that finds room for it twice over. A backup does not start
while the reserve is released, so it cannot eat the space kept for deleting.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from cairn.errors import StorageFull

NAME = "reserve"
LOW = 1024 * 1024
HIGH = 32 * 1024 * 1024


def _size(path: Path) -> int:
    st = os.statvfs(path)
    return min(HIGH, max(LOW, st.f_blocks * st.f_frsize // 32))


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def keep(path: Path) -> None:
    """Release the reserve when the disk is (nearly) full; make it when there is room."""
    reserve = path / NAME
    size = _size(path)
    free = free_bytes(path)
    if reserve.exists():
        if free < size // 2:
            reserve.unlink()
        return
    if free < 2 * size:
        return
    try:
        fd = os.open(reserve, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EOPNOTSUPP):
            raise
        with contextlib.suppress(FileNotFoundError):
            reserve.unlink()
    finally:
        os.close(fd)


def check_room(path: Path) -> None:
    """Refuse to start a write that consumes space while the reserve is released."""
    if (path / NAME).exists():
        return
    size = _size(path)
    free = free_bytes(path)
    if free < 2 * size:
        raise StorageFull(str(path), need=2 * size - free)
