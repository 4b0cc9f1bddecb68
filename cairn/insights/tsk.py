"""FAT12/16/32 through The Sleuth Kit's pytsk3 (Apache-2.0; bundles TSK, CPL-1.0/IPL-1.0).

Why not libyal's pyfsfat like the other file systems: its timestamps are wrong (release
20260826 reports 2020-01-15 10:00 as 2020-02-16 10:00, a month and a day late), and a diff or
a restore that gets times wrong is worse than none. TSK reads them right.

FAT has no owners, no links and no POSIX modes: uid/gid are None, and modes are what a
Linux mount shows (0644 files, 0755 directories, write bits gone when read-only). TSK's
virtual entries ("$MBR", "$FAT1", "$OrphanFiles"), its volume label entry (which becomes
`label`) and deleted names are hidden. Block addresses in TSK's runs are in file-system
blocks (sectors for FAT), turned into byte ranges here.
"""

from __future__ import annotations

import stat as stat_mod
from typing import Any, BinaryIO

import pytsk3

from cairn.errors import DamagedFileSystem, PathNotFound
from cairn.insights.fs import (
    DIR,
    FILE,
    OTHER,
    SYMLINK,
    Entry,
    Extents,
    FileSystem,
    first_line,
    join_path,
    open_stream,
    split_path,
)
from cairn.insights.signature import FAT
from cairn.insights.volume import VolumeReader

_TYPES = {
    int(pytsk3.TSK_FS_META_TYPE_REG): (FILE, stat_mod.S_IFREG),
    int(pytsk3.TSK_FS_META_TYPE_DIR): (DIR, stat_mod.S_IFDIR),
    int(pytsk3.TSK_FS_META_TYPE_LNK): (SYMLINK, stat_mod.S_IFLNK),
}
_VIRTUAL = (int(pytsk3.TSK_FS_META_TYPE_VIRT), int(pytsk3.TSK_FS_META_TYPE_VIRT_DIR))
_SKIP_RUNS = int(pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE) | int(pytsk3.TSK_FS_ATTR_RUN_FLAG_FILLER)
_ALLOCATED = int(pytsk3.TSK_FS_NAME_FLAG_ALLOC)
_LABEL_SUFFIX = " (Volume Label Entry)"


class _Image(pytsk3.Img_Info):  # type: ignore[misc]
    """TSK's image callback interface over a `VolumeReader`."""

    def __init__(self, reader: VolumeReader) -> None:
        self._reader = reader
        super().__init__(url="", type=pytsk3.TSK_IMG_TYPE_EXTERNAL)

    def read(self, offset: int, size: int) -> bytes:
        return self._reader.pread(offset, size)

    def get_size(self) -> int:
        return self._reader.size


def _ns(seconds: int, nanos: int) -> int | None:
    return seconds * 1_000_000_000 + nanos if seconds else None


class TskFileSystem(FileSystem):
    def __init__(self, reader: VolumeReader, kind: str, where: str) -> None:
        self.kind = kind
        self.reader = reader
        self.plain_extents = kind == FAT  # FAT has no holes, no compression
        self._where = where
        try:
            self._image = _Image(reader)
            self._fs = pytsk3.FS_Info(self._image)
            self._block = self._fs.info.block_size
            self.label = self._find_label()
        except (OSError, RuntimeError) as e:
            raise DamagedFileSystem(
                f"{where}: {kind} file system is damaged and cannot be opened ({first_line(e)})"
                ": restore the partition as an image and repair a copy with fsck"
            ) from e

    def _find_label(self) -> str:
        for raw in self._fs.open_dir("/"):
            name = raw.info.name.name.decode("utf-8", "surrogateescape")
            if name.endswith(_LABEL_SUFFIX):
                return name.removesuffix(_LABEL_SUFFIX).rstrip()
        return ""

    def close(self) -> None:
        """TSK frees its handles with the objects; dropping them is all there is to do."""
        self._fs = None

    def _fail(self, path: str, e: Exception) -> DamagedFileSystem:
        return DamagedFileSystem(
            f"{self._where}: cannot read {path} in the {self.kind} file system ({first_line(e)})"
        )

    def _open(self, parts: list[str]) -> Any:
        native = "/" + "/".join(parts)
        try:
            return self._fs.open(native)
        except OSError as e:
            if "path not found" in str(e):
                raise PathNotFound(native) from e
            raise self._fail(native, e) from e

    @staticmethod
    def _visible(raw: Any) -> bool:
        name, meta = raw.info.name, raw.info.meta
        if meta is None or not int(name.flags) & _ALLOCATED:
            return False
        if name.name in (b".", b"..") or name.name.endswith(_LABEL_SUFFIX.encode()):
            return False
        return int(meta.type) not in _VIRTUAL

    def stat(self, path: str) -> Entry:
        parts = split_path(path)
        raw = self._open(parts)
        native = "/" + "/".join(parts)
        try:
            return self._entry(raw, parts[-1] if parts else "", native)
        except OSError as e:
            raise self._fail(native, e) from e

    def list(self, path: str = "/") -> list[Entry]:
        parts = split_path(path)
        base = "/" + "/".join(parts)
        if self.stat(path).kind != DIR:
            raise PathNotFound(f"{base} (not a directory)")
        try:
            directory = self._fs.open_dir(base)
            entries = [
                self._entry(raw, name, join_path(base, name))
                for raw in directory
                if self._visible(raw)
                for name in [raw.info.name.name.decode("utf-8", "surrogateescape")]
            ]
        except OSError as e:
            raise self._fail(base, e) from e
        entries.sort(key=lambda e: e.name)
        return entries

    def open(self, path: str) -> BinaryIO:
        parts = split_path(path)
        raw = self._open(parts)
        entry = self.stat(path)
        if entry.kind != FILE:
            raise PathNotFound(f"{path} (not a regular file)")

        def read_at(offset: int, length: int) -> bytes:
            return bytes(raw.read_random(offset, length))

        return open_stream(read_at, entry.size, f"{self._where}: {path}")

    def _entry(self, raw: Any, name: str, path: str) -> Entry:
        meta = raw.info.meta
        kind, type_bits = _TYPES.get(int(meta.type), (OTHER, 0))
        size = int(meta.size) if kind != DIR else 0
        return Entry(
            name=name,
            path=path,
            kind=kind,
            size=size,
            mode=type_bits | self._permissions(kind, int(meta.mode)),
            mtime=_ns(meta.mtime, meta.mtime_nano),
            atime=_ns(meta.atime, meta.atime_nano),
            inode=int(meta.addr),
            extents=self._extents(raw, size) if kind == FILE else None,
        )

    def _permissions(self, kind: str, tsk_mode: int) -> int:
        """FAT keeps only a read-only flag; TSK reports 0777 for a plain entry and takes bits
        away for a read-only one (0333 in pytsk3 20260715). Give what a Linux mount shows:
        0644 or 0755, without write bits when read-only."""
        if self.kind != FAT:
            return tsk_mode & 0o7777
        perms = 0o755 if kind == DIR else 0o644
        return perms & ~0o222 if tsk_mode & 0o777 != 0o777 else perms

    def _extents(self, raw: Any, size: int) -> Extents | None:
        ranges = []
        for attr in raw:
            if int(attr.info.type) != int(pytsk3.TSK_FS_ATTR_TYPE_DEFAULT):
                continue
            for run in attr:
                if int(run.flags) & _SKIP_RUNS or run.len == 0:
                    continue
                ranges.append((run.addr * self._block, run.len * self._block))
        if size > 0 and not ranges:
            return None
        return tuple(ranges)
