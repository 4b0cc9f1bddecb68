"""ext2/3/4, XFS and NTFS through libyal's pyfsext, pyfsxfs and pyfsntfs (LGPL-3.0-or-later).

The three bindings share one shape (a volume opened on a file-like object, file entries with
`sub_file_entries`, `read_buffer_at_offset`, `get_extent`), so one class reads all three and
only the differences live in `_Flavour`: the path separator, how times are encoded, and
where ownership and modes come from (NTFS has neither: they are derived from its attribute
flags, and its own metadata files "$MFT" and friends are hidden from the root listing).
"""

from __future__ import annotations

import importlib
import stat as stat_mod
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from cairn.errors import DamagedFileSystem, PathNotFound
from cairn.insights.fs import (
    DIR,
    FILE,
    HOLE,
    SYMLINK,
    Entry,
    Extents,
    FileSystem,
    enter,
    first_line,
    join_path,
    kind_of_mode,
    open_stream,
    split_path,
)
from cairn.insights.signature import EXT, NTFS, XFS
from cairn.insights.volume import VolumeFile, VolumeReader

_FILETIME_EPOCH = 116444736000000000
_NTFS_READ_ONLY = 0x0001
_NTFS_DIRECTORY = 0x10000000
_NTFS_FIRST_USER_MFT = 64
_MFT_INDEX = (1 << 48) - 1
_EXTENT_SPARSE = 0x1
"""libfsext, libfsxfs and libfsntfs all flag ranges that read as zeros with this bit."""


def _posix_ns(entry: Any, getter: str) -> int | None:
    value = getattr(entry, getter)()
    return int(value) if value else None


def _filetime_ns(entry: Any, getter: str) -> int | None:
    value = getattr(entry, getter)()
    return (int(value) - _FILETIME_EPOCH) * 100 if value else None


@dataclass(frozen=True)
class _Flavour:
    module: str
    """The binding, imported when a file system of this kind is opened (each takes ms)."""
    separator: str
    time_ns: Callable[[Any, str], int | None]
    posix: bool


_FLAVOURS = {
    EXT: _Flavour("pyfsext", "/", _posix_ns, True),
    XFS: _Flavour("pyfsxfs", "/", _posix_ns, True),
    NTFS: _Flavour("pyfsntfs", "\\", _filetime_ns, False),
}


class LibyalFileSystem(FileSystem):
    def __init__(self, reader: VolumeReader, kind: str, where: str) -> None:
        self.kind = kind
        self.reader = reader
        self.plain_extents = kind != NTFS  # NTFS compresses, and reads zeros past valid data
        self._where = where
        self._flavour = _FLAVOURS[kind]
        self._file = VolumeFile(reader)
        self._volume = importlib.import_module(self._flavour.module).volume()
        try:
            self._volume.open_file_object(self._file)
            self.label = self._volume.get_label() if kind != NTFS else self._volume.get_name()
        except (OSError, RuntimeError) as e:
            raise DamagedFileSystem(
                f"{where}: {kind} file system is damaged and cannot be opened ({first_line(e)})"
                ": restore the partition as an image and repair a copy with fsck"
            ) from e
        self.label = self.label or ""
        self._to_volume = _xfs_block_mapper(reader) if kind == XFS else _identity

    def close(self) -> None:
        self._volume.close()

    def _fail(self, path: str, e: Exception) -> DamagedFileSystem:
        return DamagedFileSystem(
            f"{self._where}: cannot read {path} in the {self.kind} file system ({first_line(e)})"
        )

    def _lookup(self, path: str) -> tuple[Any, list[str]]:
        parts = split_path(path)
        try:
            if not parts:
                return self._volume.get_root_directory(), parts
            native = self._flavour.separator + self._flavour.separator.join(parts)
            found = self._volume.get_file_entry_by_path(native)
        except (OSError, RuntimeError) as e:
            raise self._fail(path, e) from e
        if found is None:
            raise PathNotFound(path)
        return found, parts

    def stat(self, path: str) -> Entry:
        raw, parts = self._lookup(path)
        name = parts[-1] if parts else ""
        try:
            return self._entry(raw, name, "/" + "/".join(parts))
        except (OSError, RuntimeError) as e:
            raise self._fail(path, e) from e

    def list(self, path: str = "/") -> list[Entry]:
        """Without extents: a listing (`cairn ls`, the console) shows none, and reading
        them is a sixth of listing a big folder; `walk` (diff) and `stat` have them."""
        raw, base = self._directory(path)
        return [entry for entry, _ in self._children(raw, base, path, extents=False)]

    def walk(self, path: str = "/") -> Iterator[Entry]:
        """Descends through the library's own file entries: looking every directory up again
        by path from the root (as `list` must) costs more than reading it."""
        raw, base = self._directory(path)
        seen: set[int] = set()
        stack = [(raw, base)]
        while stack:
            raw, base = stack.pop()
            children = self._children(raw, base, base)
            yield from (entry for entry, _ in children)
            stack.extend((child, entry.path) for entry, child in reversed(children)
                         if enter(seen, entry))

    def _directory(self, path: str) -> tuple[Any, str]:
        """The library's entry for directory `path`, and its normalised path."""
        raw, parts = self._lookup(path)
        base = "/" + "/".join(parts)
        try:
            if parts and self._entry(raw, parts[-1], base).kind != DIR:
                raise PathNotFound(f"{base} (not a directory)")
        except (OSError, RuntimeError) as e:
            raise self._fail(path, e) from e
        return raw, base

    def _children(self, raw: Any, base: str, path: str,
                  extents: bool = True) -> list[tuple[Entry, Any]]:
        """The visible entries of directory `raw` (at `base`) sorted by name, each beside the
        library's entry; `path` is what the caller asked for, for error messages."""
        children = []
        try:
            for child in raw.sub_file_entries:
                name = child.name
                if self._hidden(base, name, child):
                    continue
                children.append((self._entry(child, name, join_path(base, name), extents),
                                 child))
        except (OSError, RuntimeError) as e:
            raise self._fail(path, e) from e
        children.sort(key=lambda pair: pair[0].name)
        return children

    def open(self, path: str) -> BinaryIO:
        raw, _ = self._lookup(path)
        entry = self.stat(path)
        if entry.kind != FILE:
            raise PathNotFound(f"{path} (not a regular file)")

        def read_at(offset: int, length: int) -> bytes:
            return bytes(raw.read_buffer_at_offset(length, offset))

        return open_stream(read_at, entry.size, f"{self._where}: {path}")

    def _hidden(self, base: str, name: str, raw: Any) -> bool:
        if name in (".", ".."):
            return True
        if self.kind != NTFS or base != "/":
            return False
        return name.startswith("$") and raw.file_reference & _MFT_INDEX < _NTFS_FIRST_USER_MFT

    def _entry(self, raw: Any, name: str, path: str, extents: bool = True) -> Entry:
        flavour = self._flavour
        if flavour.posix:
            mode = raw.file_mode
            uid, gid = raw.owner_identifier, raw.group_identifier
            inode = raw.inode_number
            nlink = raw.number_of_links
        else:
            mode = _ntfs_mode(raw)
            uid = gid = None
            inode = raw.file_reference & _MFT_INDEX
            nlink = 1
        target = raw.symbolic_link_target
        kind = SYMLINK if target is not None and not stat_mod.S_ISDIR(mode) else kind_of_mode(mode)
        size = raw.size if kind != DIR else 0
        return Entry(
            name=name,
            path=path,
            kind=kind,
            size=size,
            mode=mode if kind != SYMLINK or flavour.posix else stat_mod.S_IFLNK | 0o777,
            uid=uid,
            gid=gid,
            mtime=flavour.time_ns(raw, "get_modification_time_as_integer"),
            atime=flavour.time_ns(raw, "get_access_time_as_integer"),
            ctime=flavour.time_ns(
                raw,
                "get_inode_change_time_as_integer"
                if flavour.posix
                else "get_entry_modification_time_as_integer",
            ),
            link_target=target,
            inode=inode,
            nlink=nlink,
            extents=_extents(raw, size, self._to_volume) if extents and kind == FILE else None,
        )


def _ntfs_mode(raw: Any) -> int:
    flags = raw.file_attribute_flags
    if flags & _NTFS_DIRECTORY or raw.has_directory_entries_index():
        return stat_mod.S_IFDIR | 0o755
    perms = 0o444 if flags & _NTFS_READ_ONLY else 0o644
    return stat_mod.S_IFREG | perms


def _identity(offset: int) -> int:
    return offset


def _xfs_block_mapper(reader: VolumeReader) -> Callable[[int], int]:
    """pyfsxfs reports an extent's offset as (XFS file-system block number) x (block size).

    XFS block numbers are (allocation group << agblklog) | block-in-group, and a group holds
    agblocks <= 2**agblklog blocks, so that product is not a volume offset beyond group 0.
    This turns it into one, from the superblock's sb_blocksize (big-endian u32 at 4),
    sb_agblocks (u32 at 84) and sb_agblklog (u8 at 124).
    """
    sb = reader.pread(0, 128)
    block_size = struct.unpack_from(">I", sb, 4)[0]
    ag_blocks = struct.unpack_from(">I", sb, 84)[0]
    ag_log = sb[124]
    if not block_size or not ag_blocks or not 0 < ag_log < 32:
        return _identity
    mask = (1 << ag_log) - 1

    def to_volume(offset: int) -> int:
        block, within = divmod(offset, block_size)
        group, group_block = block >> ag_log, block & mask
        return (group * ag_blocks + group_block) * block_size + within

    return to_volume


def _extents(raw: Any, size: int, to_volume: Callable[[int], int]) -> Extents | None:
    """The byte ranges of a file in file order, or None when its data is not in extents.

    The libraries flag holes (offset 0) and allocated but unwritten ranges alike as sparse:
    both read as zeros, whatever the volume holds there, so both become `HOLE`.
    """
    ranges = []
    try:
        for i in range(raw.number_of_extents):
            offset, length, flags = raw.get_extent(i)
            if length > 0:
                hole = flags & _EXTENT_SPARSE or offset <= 0
                ranges.append((HOLE if hole else to_volume(offset), length))
    except OSError:
        return None  # extents are a shortcut for diff, never a reason to fail a listing
    if size > 0 and all(offset == HOLE for offset, _ in ranges):
        return None
    return tuple(ranges)
