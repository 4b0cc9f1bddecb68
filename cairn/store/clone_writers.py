"""One writer per clone at a time (a VM's runner or a writable export, never two), and
no reader (a read-only export) while it writes.

A clone's map lives in its writer's memory until a flush replaces the file whole, so two
processes writing one clone lose each other's writes, and a VM whose disk an NBD client
writes sees it change under its file systems. Whoever opens a clone to write holds an
exclusive flock on ``clones/<name>/writer`` and writes into it who it is and how to stop
it; the next writer is refused with that line (`cairn vm start` on a clone a writable
export serves, a writable `cairn export` of a VM's disk), and so is a reader, which shares
the lock with other readers and keeps writers out. The kernel drops the lock when its
holder dies, so a killed VM or export never leaves its clone taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from cairn.errors import InUse
from cairn.store.repository import Repository


@dataclass(frozen=True)
class Writer:
    """Who writes the clone (``VM web01``) and how a user stops it, as a refusal says it."""

    holder: str
    fix: str


class CloneBusy(InUse):
    def __init__(self, clone: str, writer: Writer | None) -> None:
        if writer is None:
            super().__init__(f"clone {clone} is in use by an export that reads it (or a VM "
                             "or export starting on it): stop it first (`cairn exports "
                             "list` and `cairn vm list` show the appliance's)")
        else:
            super().__init__(f"clone {clone} is written by {writer.holder}: {writer.fix}")


def _open(repo: Repository, clone: str, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    return os.open(repo.path / "clones" / clone / "writer", flags | os.O_CLOEXEC, 0o600)


def _holder(fd: int) -> Writer | None:
    try:
        return Writer(**json.loads(os.pread(fd, 4096, 0)))
    except (ValueError, TypeError):
        return None  # readers, or a writer that has not written itself yet


def _take(fd: int, clone: str, write: bool) -> None:
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        raise CloneBusy(clone, _holder(fd)) from None


@contextlib.contextmanager
def writing(repo: Repository, clone: str, writer: Writer) -> Iterator[None]:
    """Be ``clone``'s writer until the block ends; `CloneBusy` if another process writes
    or reads it."""
    fd = _open(repo, clone)
    try:
        _take(fd, clone, write=True)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(writer)).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # the next one refused is refused by a reader, not by us
    finally:
        os.close(fd)


def _open_to_read(repo: Repository, clone: str) -> int | None:
    """The lock file, made if need be; None in a repository this user cannot write, whose
    clone nobody used since uses were recorded (then nobody can write it either)."""
    try:
        return _open(repo, clone)
    except OSError:
        try:
            return _open(repo, clone, os.O_RDONLY)
        except FileNotFoundError:
            return None


@contextlib.contextmanager
def reading(repo: Repository, clone: str) -> Iterator[None]:
    """Read ``clone`` with no writer until the block ends (readers share it): a writer's
    map changes under a reader, who would see a torn disk. `CloneBusy` if one writes now."""
    fd = _open_to_read(repo, clone)
    if fd is None:
        yield
        return
    try:
        _take(fd, clone, write=False)
        with contextlib.suppress(OSError):  # no writer now: a killed one's name goes
            os.ftruncate(fd, 0)
        yield
    finally:
        os.close(fd)


def check_free(repo: Repository, clone: str, write: bool = True) -> None:
    """Refuse (`CloneBusy`) before starting anything when ``clone`` is written now, or to
    a writer-to-be (``write``) when it is read. Read only (a flock needs no write access):
    a read-only repository's clones can be read."""
    try:
        fd = _open(repo, clone, os.O_RDONLY)
    except FileNotFoundError:
        return  # never used since uses were recorded
    try:
        _take(fd, clone, write)
    finally:
        os.close(fd)
