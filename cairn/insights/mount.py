"""A read-only FUSE view of a point's file systems (mfusepy over libfuse 3).

Layout: the single readable file system at the mount's root, or, when the point holds
several, one top-level folder per readable partition named as in `paths` (``p1``, ``p2``);
partitions that cannot be read are left out (`cairn ls` says why).

Serving is single-threaded (libfuse ``-s``): the file-system libraries are not promised to
be thread-safe, and one point read by one user gains little from threads. libfuse installs
its own SIGINT/SIGTERM/SIGHUP handlers, so Ctrl-C, `kill` and `fusermount3 -u` all end the
loop the same way: the mount is taken down before `serve` returns.

Entries are cached by path (a point never changes), so `ls -l` does not look each name up
twice; the cache is dropped whole when it grows past a bound.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from collections.abc import Callable
from typing import Any, BinaryIO

from cairn.errors import CairnError, MountError, PathNotFound, ToolMissing
from cairn.insights.disk import Volume
from cairn.insights.fs import DIR, SYMLINK, Entry, FileSystem, split_path
from cairn.insights.paths import folder_name, single

_MAX_CACHED = 100_000
_ROOT_MODE = stat_mod.S_IFDIR | 0o555
_SIGNALLED = "8"
"""What libfuse 3's fuse_main returns when a signal ended a loop that ran: a clean stop."""


def _fuse() -> Any:
    """mfusepy, bound to libfuse 3 (it would take libfuse 2 first when both exist)."""
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
    try:
        import mfusepy
    except OSError as e:
        raise ToolMissing("libfuse 3", "fuse3") from e
    return mfusepy


class PointView:
    """The FUSE operations: paths of the mount mapped to (file system, path inside it)."""

    use_ns = True

    def __init__(self, volumes: list[Volume], ready: Callable[[], None]) -> None:
        one = single(volumes)
        self._root: FileSystem | None = one.filesystem if one else None
        self._folders = {folder_name(v): v.filesystem for v in volumes
                         if v.filesystem is not None}
        self._entries: dict[str, Entry] = {}
        self._files: dict[int, BinaryIO] = {}
        self._next_handle = 1
        self._ready = ready
        self.started = False
        self._error = _fuse().FuseOSError

    def _resolve(self, path: str) -> tuple[FileSystem | None, str]:
        """(file system, inner path); (None, "/") is the synthetic root of several."""
        if self._root is not None:
            return self._root, path
        parts = split_path(path)
        if not parts:
            return None, "/"
        fs = self._folders.get(parts[0])
        if fs is None:
            raise self._error(errno.ENOENT)
        return fs, "/" + "/".join(parts[1:])

    def _entry(self, path: str) -> Entry:
        entry = self._entries.get(path)
        if entry is not None:
            return entry
        fs, inner = self._resolve(path)
        if fs is None:
            return Entry(name="", path="/", kind=DIR, size=0, mode=_ROOT_MODE)
        entry = self._call(fs.stat, inner)
        self._remember(path, entry)
        return entry

    def _remember(self, path: str, entry: Entry) -> None:
        if len(self._entries) >= _MAX_CACHED:
            self._entries.clear()
        self._entries[path] = entry

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except PathNotFound as e:
            raise self._error(errno.ENOENT) from e
        except CairnError as e:
            raise self._error(errno.EIO) from e

    # -- the operations libfuse calls ----------------------------------------------------

    def init(self, path: str) -> None:
        self.started = True
        self._ready()

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        e = self._entry(path)
        size = len(os.fsencode(e.link_target or "")) if e.kind == SYMLINK else e.size
        mode = e.mode & ~0o222  # read-only, whatever the point says
        mtime = e.mtime or 0
        return {
            "st_mode": mode, "st_size": size, "st_nlink": e.nlink if e.kind != DIR else 2,
            "st_uid": e.uid or 0, "st_gid": e.gid or 0,
            "st_mtime": mtime, "st_atime": e.atime or mtime, "st_ctime": e.ctime or mtime,
            "st_blocks": -(-size // 512),
        }

    def readdir(self, path: str, fh: int) -> list[str]:
        fs, inner = self._resolve(path)
        if fs is None:
            return [".", "..", *sorted(self._folders)]
        base = path.rstrip("/")
        names = [".", ".."]
        for child in self._call(fs.list, inner):
            self._remember(f"{base}/{child.name}", child)
            names.append(child.name)
        return names

    def readlink(self, path: str) -> str:
        e = self._entry(path)
        if e.kind != SYMLINK:
            raise self._error(errno.EINVAL)
        return e.link_target or ""

    def open(self, path: str, flags: int) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
            raise self._error(errno.EROFS)
        fs, inner = self._resolve(path)
        if fs is None:
            raise self._error(errno.EISDIR)
        handle = self._next_handle
        self._next_handle += 1
        self._files[handle] = self._call(fs.open, inner)
        return handle

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        f = self._files.get(fh)
        if f is None:
            raise self._error(errno.EBADF)
        f.seek(offset)
        return bytes(self._call(f.read, size))

    def release(self, path: str, fh: int) -> int:
        f = self._files.pop(fh, None)
        if f is not None:
            f.close()
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    def access(self, path: str, amode: int) -> int:
        if amode & os.W_OK:
            raise self._error(errno.EROFS)
        self._entry(path)
        return 0


def serve(volumes: list[Volume], mountpoint: str, ready: Callable[[], None]) -> None:
    """Mount and serve until unmounted or signalled; the mount is gone when this returns."""
    if not any(v.filesystem is not None for v in volumes):
        raise MountError("no partition of this point holds a readable file system: "
                         "`cairn ls POINT` says what is on each")
    if not os.path.isdir(mountpoint):
        raise MountError(f"{mountpoint} is not a directory: create an empty directory to "
                         "mount on")
    if os.path.ismount(mountpoint):
        raise MountError(f"{mountpoint} is already a mount point: unmount it first "
                         f"(`fusermount3 -u {mountpoint}`) or choose another directory")
    with os.scandir(mountpoint) as entries:
        if next(entries, None) is not None:
            raise MountError(f"{mountpoint} is not empty: the mount would hide its files "
                             "(and a script could mistake them for the point's); give an "
                             "empty directory")
    if not os.path.exists("/dev/fuse"):
        raise MountError("/dev/fuse does not exist: load the fuse module (`modprobe fuse`) "
                         "or give the container the FUSE device")
    fuse = _fuse()
    view = PointView(volumes, ready)
    try:
        fuse.FUSE(view, mountpoint, foreground=True, nothreads=True, ro=True, fsname="cairn",
                  subtype="cairn", default_permissions=True)
    except RuntimeError as e:
        if view.started and str(e) == _SIGNALLED:
            return
        raise MountError(f"cannot mount on {mountpoint} (libfuse said {e}): check that the "
                         "directory is empty and that fusermount3 is installed") from e
