"""Advisory file locks that say who holds them, and since when.

A lock is an ``flock`` on a file under ``<repo>/locks/``; the holder writes its pid, host,
command and start time into the file, so a refused or waiting second writer can name the
first and say how long it has held the lock. The kernel drops an ``flock`` the moment its
holder dies (the descriptor is close-on-exec, so no child it started keeps it), so a lock
whose holder was a process on this host that died is free at once: there is no stale
local lock to expire.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from cairn.errors import Locked

POLL = 0.1


def holder() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": os.uname().nodename,
        "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "started": time.time(),
    }


class FileLock:
    """An exclusive (or shared) lock on ``path``.

    `acquire` fails at once by default; ``wait=True`` blocks until the lock is free, and
    ``wait=SECONDS`` tries for that long, telling ``notify`` once who it is waiting for.
    """

    def __init__(self, path: Path, what: str,
                 holders: Callable[[], str] | None = None) -> None:
        """``holders`` describes who holds the lock, where they say so elsewhere (shared
        holders cannot all write into the lock file)."""
        self.path = path
        self.what = what
        self.holders = holders
        self._fd: int | None = None

    def acquire(self, shared: bool = False, wait: bool | float = False,
                notify: Callable[[str], None] | None = None) -> FileLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            if wait is True:
                fcntl.flock(fd, mode)
            else:
                self._try(fd, mode, float(wait), notify)
        except BaseException:
            os.close(fd)
            raise
        if not shared:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(holder()).encode(), 0)
            except OSError:  # a full disk: the lock holds, it just cannot say whose it is
                pass
        self._fd = fd
        return self

    def _try(self, fd: int, mode: int, seconds: float,
             notify: Callable[[str], None] | None) -> None:
        """Take the lock within ``seconds`` or raise `Locked` naming its holder."""
        deadline = time.monotonic() + seconds
        told = False
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                hint = f"waited {seconds:g} s; " if seconds else ""
                raise Locked(f"{self.what} is locked by {self.describe_holder()}: {hint}wait "
                             "for it to finish (`--wait SECONDS` waits for it), or stop it")
            if notify is not None and not told:
                notify(f"waiting up to {left:.0f} s for {self.what}, locked by "
                       f"{self.describe_holder()}")
                told = True
            time.sleep(min(POLL, left))

    def describe_holder(self) -> str:
        """Who holds the lock and for how long, from what the holder wrote."""
        if self.holders is not None:
            return self.holders()
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        if not info:
            return "another process"
        return describe(info, str(info.get("command")))

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def describe(info: dict[str, object], what: str) -> str:
    """``pid N on HOST (WHAT, since T, held for S s)`` from a holder's record."""
    held = ""
    started = info.get("started")
    if isinstance(started, (int, float)):
        held = f", held for {max(0.0, time.time() - started):.0f} s"
    return f"pid {info.get('pid')} on {info.get('host')} ({what}, since {info.get('since')}{held})"
