"""Points in use: an export, a boot or a screenshot check pins its point against deletion.

A committed point never changes, so readers take no lock to read it; but deleting a point
that an NBD client is reading frees its chunks under the client, which then gets I/O errors
for the rest of its read. So whoever serves or boots a point holds a *pin*: a shared
``flock`` on ``locks/point-<id>.lock`` (many may pin one point), with a note of who it is in
``locks/point-<id>.<pid>-<n>.who``. A delete takes that lock exclusively: it is refused,
naming every pin's holder, or waits for them with ``--wait``. The kernel drops a pin when
its process dies, so a crashed export never blocks a delete; its stale note is ignored.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

from cairn import pids
from cairn.errors import Locked, UnknownPoint
from cairn.store.catalog import RecoveryPoint
from cairn.store.locks import FileLock, describe, holder
from cairn.store.repository import Repository

_serial = itertools.count()


def _lock(repo: Repository, point_id: str) -> FileLock:
    folder = repo.path / "locks"

    def holders() -> str:
        return "; ".join(_users(folder, point_id)) or "another process"

    return FileLock(folder / f"point-{point_id}.lock", f"point {point_id}", holders)


def _users(folder: Path, point_id: str) -> list[str]:
    """What the live pins of a point say about themselves."""
    found = []
    for note in sorted(folder.glob(f"point-{point_id}.*.who")):
        try:
            info = json.loads(note.read_text())
            gone = not pids.running(int(info["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # gone since listed
        if gone:
            continue  # its process is: the kernel dropped its lock
        found.append(f"{info.get('what')}: " + describe(info, str(info.get("command"))))
    return found


@contextlib.contextmanager
def pin_point(repo: Repository, point: RecoveryPoint, what: str) -> Iterator[None]:
    """Hold ``point`` against deletion while the block runs; ``what`` is how a refused
    delete names this use (``export of point X at nbd://...``)."""
    lock = _lock(repo, point.id).acquire(shared=True, wait=True)
    note = repo.path / "locks" / f"point-{point.id}.{os.getpid()}-{next(_serial)}.who"
    try:
        if repo.catalog.point(point.id) is None:  # deleted while we waited for the lock
            raise UnknownPoint(point.id)
        with contextlib.suppress(OSError):  # a full disk: the pin holds, unnamed
            note.write_text(json.dumps({**holder(), "what": what}))
        yield
    finally:
        note.unlink(missing_ok=True)
        lock.release()


@contextlib.contextmanager
def exclusive(repo: Repository, point: RecoveryPoint) -> Iterator[None]:
    """No pin on ``point`` while the block runs (a delete); waits ``repo.lock_wait``."""
    lock = _lock(repo, point.id).acquire(wait=repo.lock_wait, notify=repo.on_wait)
    try:
        yield
        if repo.catalog.point(point.id) is None:  # a pin that opened it finds no point
            (repo.path / "locks" / f"point-{point.id}.lock").unlink(missing_ok=True)
    finally:
        lock.release()


def in_use(repo: Repository, point: RecoveryPoint) -> bool:
    """Whether some process pins ``point`` now."""
    try:
        _lock(repo, point.id).acquire().release()
    except Locked:
        return True
    return False
