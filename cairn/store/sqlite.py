"""Opening the store's SQLite databases (the catalog and the pack index) the same way.

Both are in WAL mode, shared by threads of one process (each user serialises its own
access) and by processes (a writer waits up to a minute for another's transaction).

A short command (a delete, an incremental backup) spends most of its time, cold, on
SQLite's 4 KiB page reads scattered over the database and its WAL: a thousand random
reads. Asking the kernel to read both files ahead, in the background, as they are opened
turns those into a few sequential reads. Files above PREFETCH_LIMIT are left alone: there
the bytes read ahead would cost more than the random reads they save.

Only the first connection a process makes to a database prefetches it: closing *any*
descriptor of a file drops every POSIX lock the process holds on it, including those of
its open SQLite connections, and another process then checkpoints or rewrites the WAL under
them ("database disk image is malformed", committed chunks missing from the pack index:
found by `cairn debug torture` with a second connection open, as in the appliance).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cairn.errors import StorageFull
from cairn.store import reserve

PREFETCH_LIMIT = 64 * 1024 * 1024


_prefetched: set[str] = set()
_guard = threading.Lock()


def _prefetch(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if os.fstat(fd).st_size <= PREFETCH_LIMIT:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def prefetch_once(path: Path) -> None:
    """Start reading ``path`` and its log ahead, if no connection of this process opened it
    yet (see the module's docstring): call it before opening the first."""
    key = os.path.abspath(path)
    with _guard:
        first = key not in _prefetched
        _prefetched.add(key)
    if first:
        for part in (path, path.with_name(path.name + "-wal")):
            _prefetch(part)


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (callers issue BEGIN) on a WAL database.

    A new database file is made 0600 first: SQLite gives its WAL and shared-memory files
    the database file's mode, so the whole catalog stays private whatever the umask.
    """
    prefetch_once(path)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    db = sqlite3.connect(path, isolation_level=None, timeout=60.0, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as exc:
        db.close()
        full = full_disk(exc, path)
        if full is exc:
            raise
        raise full from exc
    return db


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes ``path``: for reading a repository on read-only media
    (a USB disk, a snapshot) or with read permission only.

    SQLite reads a WAL database read-only when it can use (or create) its shared-memory
    file; on read-only media after a clean close there is none and no log either, so the
    file is read as *immutable*. A log left by a writer that was killed, where no
    shared-memory file can be made, is applied to a private copy in memory instead (the
    catalog's size, read once), so no committed point is missed.
    """
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                             timeout=60.0, check_same_thread=False)
        db.execute("PRAGMA user_version").fetchone()
        return db
    except sqlite3.OperationalError:
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size:
            return _copied(path, wal)
        db = sqlite3.connect(f"file:{path}?immutable=1", uri=True, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA user_version").fetchone()
        return db


def _copied(path: Path, wal: Path) -> sqlite3.Connection:
    """The database with its log applied, in memory (see `connect_read_only`)."""
    import shutil  # here: only a killed writer's log on read-only media needs them

    from cairn import scratch

    with scratch.folder("cairn-ro-") as folder:
        shutil.copyfile(path, folder / path.name)
        shutil.copyfile(wal, folder / wal.name)
        source = sqlite3.connect(folder / path.name)
        memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        source.backup(memory)
        source.close()
        return memory


def full_disk(exc: sqlite3.OperationalError, path: Path) -> Exception:
    """What to raise for ``exc``: `StorageFull`, saying how much to free, when the file
    system is full (SQLite says "disk I/O error" when it cannot grow its shared-memory
    file, "database or disk is full" when its log cannot grow), else ``exc`` itself."""
    free = reserve.free_bytes(path.parent)
    if free < reserve.LOW:
        return StorageFull(str(path.parent), need=reserve.LOW - free)
    return exc


class SharedDb:
    """One connection to a small WAL database (``appliance.db``) for all of a process's
    threads, under one lock; transactions are IMMEDIATE, so other processes wait their
    turn. The modules owning its tables (`appliance.state`, `alerts.store`) build on it.
    ``prefetch``: read the file ahead as it opens (`prefetch_once`), for a database that is
    only ever opened through this class."""

    def __init__(self, path: Path, schema: str, prefetch: bool = False) -> None:
        self.path = path
        if prefetch:
            prefetch_once(path)
        self._lock = threading.RLock()
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30.0,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(schema)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self.db.execute(sql, params).fetchall()
