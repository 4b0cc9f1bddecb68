"""Child process of the concurrency crash test: one backup, paused and killed on cue.

``python -m tests.store.crash_worker REPO VOLUME IMAGE GATE KILL_AT``: the backup runs until
its chunks are written and it is about to make them durable (the first `PackBackend.sync`
with something to sync), creates ``GATE.ready`` and waits for ``GATE.go``. From then on it
counts each step that changes storage (an fsync, a hole punched, a file unlinked, a SQLite
COMMIT) and SIGKILLs itself just before step ``KILL_AT`` (0: never), as a power cut would.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cairn.store import sqlite
from cairn.store.backends import packs
from cairn.store.repository import Repository
from tests.store.helpers import backup

_armed = False
_steps = 0
_kill_at = 0


def _step() -> None:
    global _steps
    if not _armed:
        return
    _steps += 1
    if _steps == _kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def _counted(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _step()
        return fn(*args, **kwargs)

    return wrapper


def _connect(path: Path) -> sqlite3.Connection:
    db = real_connect(path)
    db.set_trace_callback(lambda sql: _step() if sql.strip().upper() == "COMMIT" else None)
    return db


def _gated_sync(gate: Path) -> Callable[[packs.PackBackend], None]:
    real_sync = packs.PackBackend.sync

    def sync(self: packs.PackBackend) -> None:
        global _armed
        if not _armed and self._pending:
            gate.with_suffix(".ready").touch()
            while not gate.with_suffix(".go").exists():
                time.sleep(0.01)
            _armed = True
        real_sync(self)

    return sync


real_connect = sqlite.connect


def instrument(gate: Path, kill_at: int) -> None:
    """Pause at the first sync with something to sync, then count storage steps and die
    just before step ``kill_at`` (0: never); `repack_worker` uses it too."""
    global _kill_at
    _kill_at = kill_at
    sqlite.connect = _connect  # type: ignore[assignment]
    os.fsync = _counted(os.fsync)
    os.unlink = _counted(os.unlink)
    packs._punch = _counted(packs._punch)
    packs.PackBackend.sync = _gated_sync(gate)  # type: ignore[method-assign]


def steps() -> int:
    return _steps


def main(repo_path: str, volume: str, image: str, gate: str, kill_at: int) -> None:
    instrument(Path(gate), kill_at)
    repo = Repository.open(Path(repo_path))
    point = backup(repo, volume, Path(image))
    repo.close()
    print(point.id, _steps)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
