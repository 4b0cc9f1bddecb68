"""A directory on any local file system.

Objects are files; a name's ``/`` are directories. ``put`` writes a temporary file and
renames it over the final name, so a crash leaves either the whole object or a stray
``.tmp`` file, never a torn object. Durability is batched: no fsync per object, one
``syncfs`` of the whole file system in ``sync`` (one flush for thousands of chunks, where an
fsync each would cost more than the backup itself).
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from cairn.errors import StorageFull
from cairn.store.backend import T

READERS = max(2, min(8, os.cpu_count() or 2))  # a chunk read waits on a cold disk: overlap

_libc = ctypes.CDLL(None, use_errno=True)


def syncfs(path: Path) -> None:
    """Flush every dirty page and directory entry of the file system holding ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


class LocalBackend:
    def __init__(self, root: Path, read_only: bool = False) -> None:
        self.root = root
        self.read_only = read_only

    def _path(self, name: str) -> Path:
        return self.root / name

    def put(self, name: str, data: bytes, replace: bool = False) -> None:
        """Writes over any stored copy, so ``replace`` needs nothing more."""
        path = self._path(name)
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        try:
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.rename(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(str(self.root)) from exc
            raise

    def get(self, name: str) -> bytes:
        # open, fstat, one read of exactly the size, close: a restore does this for every
        # chunk, and Python's file objects add an lseek and an extra read at the end.
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KeyError(name) from None
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size)
            while len(data) < size:  # never for a regular file, but read() may stop short
                more = os.read(fd, size - len(data))
                if not more:
                    break
                data += more
            return data
        finally:
            os.close(fd)

    def get_many(self, names: list[str], each: Callable[[str, bytes], T]) -> Iterator[T]:
        from cairn.store.parallel import get_each  # only bulk reads pay for a thread pool

        return get_each(self.get, names, each, READERS)

    def exists(self, name: str) -> bool:
        return self._path(name).exists()

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def delete_many(self, names: list[str]) -> None:
        from concurrent.futures import ThreadPoolExecutor  # only deletes pay for the import

        with ThreadPoolExecutor(8) as pool:  # an unlink waits on the journal: overlap them
            list(pool.map(self.delete, names))

    def list(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        if not base.exists():
            return
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root)
            for f in files:
                if not f.endswith(".tmp"):
                    yield str(rel / f)

    def sync(self) -> None:
        syncfs(self.root)

    def close(self) -> None:
        """Nothing is held open between calls."""

    def recover(self) -> None:
        """Nothing to do: a dead writer leaves at most a ``.tmp`` file, which lists skip."""
