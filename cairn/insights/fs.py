"""One interface over every file system insights can read, whatever library reads it.

Paths are always POSIX-style and absolute ("/etc/hosts"), whatever the file system's own
separator. Lookups are lexical: a symbolic link inside the point is reported, never
followed (its target names a path on the protected machine, not in this process).
`stat` describes the entry itself (like `lstat`).

`Entry.extents` are the byte ranges ``(offset, length)`` on the volume that hold the file's
data, in file order, when the library can say; None means unknown (data kept inside the
inode, a resident NTFS attribute, or a library that does not expose it). A range that reads
as zeros (a hole, or space allocated but never written) is ``(HOLE, length)``: keeping holes
in place keeps the layout, so equal extents mean the same bytes at the same file offsets.
`diff` relies on this: a file whose extents are unchanged and whose extents meet no changed
range has the same content, so it is never read. Where `FileSystem.plain_extents` holds,
the extents read in order (holes as zeros) and cut at the size *are* the content, so `diff`
compares files by reading the volume (`FileSystem.reader`) without the library.
"""

from __future__ import annotations

import io
import stat as stat_mod
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cairn.errors import DamagedFileSystem
from cairn.insights.volume import VolumeReader

FILE, DIR, SYMLINK, OTHER = "file", "dir", "symlink", "other"

Extents = tuple[tuple[int, int], ...]
HOLE = -1
"""The offset of an extent that holds no data on the volume and reads as zeros."""


@dataclass(frozen=True)
class Entry:
    """One name in a file system; times are nanoseconds since the Unix epoch (None: unknown)."""

    name: str
    path: str
    kind: str
    size: int
    mode: int
    uid: int | None = None
    gid: int | None = None
    mtime: int | None = None
    atime: int | None = None
    ctime: int | None = None
    link_target: str | None = None
    inode: int | None = None
    nlink: int = 1
    extents: Extents | None = None

    @property
    def permissions(self) -> int:
        return stat_mod.S_IMODE(self.mode)


def kind_of_mode(mode: int) -> str:
    if stat_mod.S_ISREG(mode):
        return FILE
    if stat_mod.S_ISDIR(mode):
        return DIR
    if stat_mod.S_ISLNK(mode):
        return SYMLINK
    return OTHER


def split_path(path: str) -> list[str]:
    """The components of an absolute path; "." and empty parts drop, ".." pops (lexically)."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return parts


def first_line(e: BaseException) -> str:
    """The most telling part of a library's error text, on one line.

    libyal errors read "binding: top message. innermost: cause. outer: ..."; the
    innermost cause (second sentence) says what is actually wrong, without function names.
    """
    text = " ".join(str(e).split())
    sentences = [s for s in text.split(". ") if s]
    if not sentences:
        return type(e).__name__
    cause = sentences[1] if len(sentences) > 1 else sentences[0]
    return cause.split(": ", 1)[-1].rstrip(".")


def join_path(parent: str, name: str) -> str:
    return f"{parent.rstrip('/')}/{name}"


MAX_DEPTH = 200


def enter(seen: set[int], entry: Entry) -> bool:
    """Whether a walk goes into `entry`: a directory, not deeper than MAX_DEPTH levels, and
    never twice into one inode. A damaged (or hostile) file system in a point can link a
    directory into its own child; followed, that cycle is an endless walk."""
    if entry.kind != DIR or entry.path.count("/") > MAX_DEPTH:
        return False
    if entry.inode is None:
        return True
    if entry.inode in seen:
        return False
    seen.add(entry.inode)
    return True


class FileSystem(ABC):
    """A read-only file system inside a volume. Errors are `CairnError`s, never tracebacks."""

    kind: str
    label: str = ""
    reader: VolumeReader
    """The volume the file system was opened on; extents are offsets into it."""
    plain_extents: bool = False
    """True when every file whose extents cover its size is exactly those extents read in
    order (holes as zeros), cut at the size: no compression, no valid-data length."""

    @abstractmethod
    def stat(self, path: str) -> Entry:
        """The entry at `path`; raises `PathNotFound`."""

    @abstractmethod
    def list(self, path: str = "/") -> list[Entry]:
        """The entries of directory `path`, without "." and "..", sorted by name; their
        `extents` may be left out (None) where that is cheaper: `stat` and `walk` give them."""

    @abstractmethod
    def open(self, path: str) -> BinaryIO:
        """A seekable binary reader over the regular file at `path` (streams big files)."""

    def read(self, path: str) -> bytes:
        """The whole content of a regular file: for small files; use `open` for big ones."""
        with self.open(path) as f:
            return f.read()

    def walk(self, path: str = "/") -> Iterator[Entry]:
        """Every entry below `path` (not `path` itself), each directory before its contents;
        a directory met again (see `enter`) is listed but not walked into."""
        seen: set[int] = set()
        stack = [path]
        while stack:
            entries = self.list(stack.pop())
            yield from entries
            stack.extend(e.path for e in reversed(entries) if enter(seen, e))

    @abstractmethod
    def close(self) -> None:
        """Release the library's handles; the volume reader stays open."""

    def __enter__(self) -> FileSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EntryStream(io.RawIOBase):
    """A seekable reader over one file's content, given a positional read function.

    Each stream keeps its own position, so several files (or the same file twice) can be
    read at once over one library volume. Library errors surface as `DamagedFileSystem`.
    """

    def __init__(self, read_at: Callable[[int, int], bytes], size: int, what: str) -> None:
        super().__init__()
        self._read_at = read_at
        self._size = size
        self._what = what
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        length = min(len(buffer), self._size - self._pos)
        if length <= 0:
            return 0
        try:
            data = self._read_at(self._pos, length)
        except (OSError, RuntimeError) as e:
            raise DamagedFileSystem(f"{self._what}: read failed at offset {self._pos}: {e}") from e
        if not data:
            raise DamagedFileSystem(f"{self._what}: file data ends early at offset {self._pos}")
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def open_stream(read_at: Callable[[int, int], bytes], size: int, what: str) -> BinaryIO:
    return io.BufferedReader(EntryStream(read_at, size, what), buffer_size=1 << 20)  # type: ignore[return-value]
