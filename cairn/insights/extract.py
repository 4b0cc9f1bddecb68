"""Restore files and directories from a point's file system into a directory on the host.

The image is untrusted input: a damaged or hostile file system can hold names like "../x"
or "a/b", and the target may already hold symlinks (from an earlier restore) that point
anywhere. So nothing here resolves a path string below the target: every directory is
opened relative to its parent's descriptor with O_NOFOLLOW, every file is created with
O_CREAT | O_EXCL | O_NOFOLLOW, and each name is checked to be one plain component. A
symlink found where a directory should be, or a bad name, stops the restore with
`UnsafePath`; nothing is ever written through a symlink.

What is kept: contents, permission bits (setuid too), owner and group when running as root,
mtime and atime (nanoseconds), symlinks as symlinks, hard links as hard links (same inode in
the point, `os.link` on the host). Device nodes, fifos and sockets are skipped and counted.
Directory times are set after their contents are written, or writing would change them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import DestinationError, UnsafePath
from cairn.insights.fs import DIR, FILE, SYMLINK, Entry, FileSystem, enter

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20


@dataclass
class Extracted:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    skipped: int = 0
    bytes: int = 0


def extract(
    fs: FileSystem, path: str, target: str | os.PathLike[str], *, overwrite: bool = False,
    links: dict[int, list[str]] | None = None,
) -> Extracted:
    """Write the entry at `path` into `target` as `target/<its name>`.

    For "/" the root's contents go straight into `target` (whose own mode and times are
    left alone). The target directory is created if missing. An existing file is an error
    unless `overwrite`; existing directories merge. `links` (inode: where it was first
    written), shared by the calls of one restore of several paths of `fs` into `target`,
    keeps a hard link shared between two of those paths one file.
    """
    entry = fs.stat(path)
    try:
        Path(target).mkdir(parents=True, exist_ok=True)
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise DestinationError(f"cannot use {os.fspath(target)} as the target: {e.strerror}") from e
    writer = _Writer(fs, root_fd, os.fspath(target), overwrite)
    if links is not None:
        writer.first_link = links
    try:
        if entry.kind == DIR and entry.name == "":
            writer.children(entry, root_fd, [])
        else:
            writer.write(entry, root_fd, [])
    finally:
        os.close(root_fd)
    return writer.done


class _Writer:
    def __init__(self, fs: FileSystem, root_fd: int, target: str, overwrite: bool) -> None:
        self.fs = fs
        self.root_fd = root_fd
        self.target = target
        self.overwrite = overwrite
        self.as_root = os.geteuid() == 0
        self.done = Extracted()
        self.first_link: dict[int, list[str]] = {}
        self.entered: set[int] = set()

    def write(self, entry: Entry, parent_fd: int, parents: list[str]) -> None:
        _check_name(entry)
        rel = [*parents, entry.name]
        try:
            if entry.kind == DIR and not enter(self.entered, entry):
                self.done.skipped += 1
            elif entry.kind == DIR:
                self._directory(entry, parent_fd, rel)
            elif entry.kind == FILE:
                self._file(entry, parent_fd, rel)
            elif entry.kind == SYMLINK:
                self._symlink(entry, parent_fd)
            else:
                self.done.skipped += 1
        except OSError as e:
            raise self._error(e, rel) from e

    def children(self, entry: Entry, fd: int, rel: list[str]) -> None:
        for child in self.fs.list(entry.path):
            self.write(child, fd, rel)

    def _error(self, e: OSError, rel: list[str]) -> Exception:
        where = os.path.join(self.target, *rel)
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            return UnsafePath(
                f"refusing to write {where}: a symlink is in the way and would lead outside "
                "the target; restore into an empty directory"
            )
        if e.errno == errno.EEXIST:
            return DestinationError(
                f"{where} already exists: restore into an empty directory or overwrite"
            )
        return DestinationError(f"cannot write {where}: {e.strerror}")

    def _make_room(self, name: str, parent_fd: int) -> None:
        if self.overwrite:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=parent_fd)

    def _directory(self, entry: Entry, parent_fd: int, rel: list[str]) -> None:
        with contextlib.suppress(FileExistsError):
            os.mkdir(entry.name, 0o700, dir_fd=parent_fd)
        if stat.S_ISLNK(os.stat(entry.name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, "a symlink is where a directory should be")
        fd = os.open(entry.name, _DIR_FLAGS, dir_fd=parent_fd)
        try:
            self.children(entry, fd, rel)
            self.set_metadata(entry, fd)
        finally:
            os.close(fd)
        self.done.dirs += 1

    def _file(self, entry: Entry, parent_fd: int, rel: list[str]) -> None:
        self._make_room(entry.name, parent_fd)
        if entry.nlink > 1 and entry.inode is not None:
            first = self.first_link.get(entry.inode)
            if first is not None:
                self._link(first, entry.name, parent_fd)
                return
            self.first_link[entry.inode] = rel
        fd = os.open(entry.name, _NEW_FILE, 0o600, dir_fd=parent_fd)
        try:
            with self.fs.open(entry.path) as src, os.fdopen(fd, "wb", closefd=False) as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)
            self.set_metadata(entry, fd)
        finally:
            os.close(fd)
        self.done.files += 1
        self.done.bytes += entry.size

    def _link(self, first: list[str], name: str, parent_fd: int) -> None:
        """Link to the first copy, reaching it component by component without following."""
        fds = []
        try:
            fd = self.root_fd
            for part in first[:-1]:
                fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                fds.append(fd)
            os.link(first[-1], name, src_dir_fd=fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        finally:
            for fd in fds:
                os.close(fd)
        self.done.hardlinks += 1

    def _symlink(self, entry: Entry, parent_fd: int) -> None:
        self._make_room(entry.name, parent_fd)
        os.symlink(entry.link_target or "", entry.name, dir_fd=parent_fd)
        if self.as_root and entry.uid is not None and entry.gid is not None:
            os.chown(entry.name, entry.uid, entry.gid, dir_fd=parent_fd, follow_symlinks=False)
        times = _times(entry)
        if times:
            os.utime(entry.name, ns=times, dir_fd=parent_fd, follow_symlinks=False)
        self.done.symlinks += 1

    def set_metadata(self, entry: Entry, fd: int) -> None:
        """Owner first (chown clears setuid bits), then mode, then times."""
        if self.as_root and entry.uid is not None and entry.gid is not None:
            os.fchown(fd, entry.uid, entry.gid)
        os.fchmod(fd, entry.permissions)
        times = _times(entry)
        if times:
            os.utime(fd, ns=times)


def _times(entry: Entry) -> tuple[int, int] | None:
    if entry.mtime is None:
        return None
    return (entry.atime if entry.atime is not None else entry.mtime, entry.mtime)


def _check_name(entry: Entry) -> None:
    name = entry.name
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsafePath(
            f"refusing to restore {entry.path!r}: its name {name!r} is not a single path "
            "component and would leave the target directory (the file system may be damaged)"
        )
