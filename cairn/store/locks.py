"""Advisory file locks that say who holds them.

A lock is an ``flock`` on a file under ``<repo>/locks/``; the holder writes its pid, host
and command into the file, so a refused second writer can name the first. The kernel drops
an ``flock`` when its holder dies, so a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from cairn.errors import Locked


def _holder() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": os.uname().nodename,
        "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


class FileLock:
    """An exclusive (or shared) lock on ``path``; `acquire` fails fast unless ``wait``."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self, shared: bool = False, wait: bool = False) -> FileLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode if wait else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Locked(f"{self.what} is locked by {self._describe_holder()}: "
                         "wait for it to finish, or stop it") from None
        if not shared:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(_holder()).encode(), 0)
            except OSError:  # a full disk: the lock holds, it just cannot say whose it is
                pass
        self._fd = fd
        return self

    def _describe_holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another process"
        return (f"pid {info.get('pid')} on {info.get('host')} "
                f"({info.get('command')}, since {info.get('since')})")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
