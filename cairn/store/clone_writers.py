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

Readers share the lock, so they cannot write themselves into it: each reader also holds an
exclusive flock on a file of its own, ``clones/<name>/readers/<random>``, saying who it is
and how to stop it, and a writer-to-be refused by readers names them from there. A file
whose lock is free is a killed reader's and is removed by whoever finds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from cairn.errors import InUse
from cairn.store.repository import Repository


@dataclass(frozen=True)
class Holder:
    """Who writes or reads the clone (``VM web01``) and how a user stops it, as a refusal
    says it."""

    holder: str
    fix: str


class CloneBusy(InUse):
    def __init__(self, clone: str, writer: Holder | None, readers: list[Holder]) -> None:
        if writer is not None:
            super().__init__(f"clone {clone} is written by {writer.holder}: {writer.fix}")
        elif readers:
            more = f" (and {len(readers) - 1} other readers)" if len(readers) > 1 else ""
            super().__init__(f"clone {clone} is in use by {readers[0].holder}, which reads "
                             f"it{more}: {readers[0].fix}")
        else:
            super().__init__(f"clone {clone} is in use by an export that reads it (or a VM "
                             "or export starting on it): stop it first (`cairn exports "
                             "list` and `cairn vm list` show the appliance's)")


def _open(repo: Repository, clone: str, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    return os.open(repo.path / "clones" / clone / "writer", flags | os.O_CLOEXEC, 0o600)


def _holder(fd: int) -> Holder | None:
    try:
        return Holder(**json.loads(os.pread(fd, 4096, 0)))
    except (ValueError, TypeError):
        return None  # readers, or a writer that has not written itself yet


def _take(repo: Repository, fd: int, clone: str, write: bool) -> None:
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        writer = _holder(fd)
        raise CloneBusy(clone, writer, [] if writer else _readers(repo, clone)) from None


def _readers(repo: Repository, clone: str) -> list[Holder]:
    """The live readers of ``clone`` (their files are locked); a dead one's file goes."""
    found = []
    for path in sorted((repo.path / "clones" / clone / "readers").glob("*.json")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            with contextlib.suppress(OSError):
                path.unlink()  # free: its reader was killed
        except BlockingIOError:
            found.append(_holder(fd) or Holder("a reader starting", "try again in a moment"))
        finally:
            os.close(fd)
    return found


@contextlib.contextmanager
def _named(repo: Repository, clone: str, reader: Holder) -> Iterator[None]:
    """Hold a file naming ``reader`` until the block ends. Written and locked under a
    temporary name, then renamed, so no one sees it unlocked while it lives."""
    folder = repo.path / "clones" / clone / "readers"
    name = secrets.token_hex(8)
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(folder / f"{name}.tmp", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                     0o600)
    except OSError:
        yield  # a repository this user cannot write: the reader goes unnamed
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.pwrite(fd, json.dumps(asdict(reader)).encode(), 0)
        os.rename(folder / f"{name}.tmp", folder / f"{name}.json")
        yield
    finally:
        for left in (f"{name}.json", f"{name}.tmp"):
            with contextlib.suppress(OSError):
                (folder / left).unlink()
        os.close(fd)


@contextlib.contextmanager
def writing(repo: Repository, clone: str, writer: Holder) -> Iterator[None]:
    """Be ``clone``'s writer until the block ends; `CloneBusy` if another process writes
    or reads it."""
    fd = _open(repo, clone)
    try:
        _take(repo, fd, clone, write=True)
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
def reading(repo: Repository, clone: str, reader: Holder) -> Iterator[None]:
    """Read ``clone`` with no writer until the block ends (readers share it): a writer's
    map changes under a reader, who would see a torn disk. `CloneBusy` if one writes now.
    ``reader`` is named to a writer-to-be refused meanwhile."""
    fd = _open_to_read(repo, clone)
    if fd is None:
        yield
        return
    try:
        _take(repo, fd, clone, write=False)
        with contextlib.suppress(OSError):  # no writer now: a killed one's name goes
            os.ftruncate(fd, 0)
        with _named(repo, clone, reader):
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
        _take(repo, fd, clone, write)
    finally:
        os.close(fd)
