"""Clones: writable copies of a point, made in constant time, that never change the point.

A clone is a catalog row naming its point, plus a folder ``<repo>/clones/<name>/`` with a
sparse *overlay* file the size of the volume and a *map* with one bit per block. A block
whose bit is set is read from the overlay; any other block is read from the point's own
block map. The first write to a block copies it up (read the point's block, patch it,
write it whole into the overlay): the point itself is never written. Creating a clone
writes an empty overlay and map whatever the volume size; removing one deletes its folder,
which frees exactly what only the clone held.

Durability follows a disk's: writes are visible at once, and durable after ``flush``,
which syncs the overlay and then replaces the map atomically.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import InUse, UsageError
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO
from cairn.store.reader import PointReader
from cairn.store.repository import Repository

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Clone:
    name: str
    point_id: str
    created: float


class CloneNotFound(UsageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no clone {name!r} in this repository: `cairn clones` lists them")


def _folder(repo: Repository, name: str) -> Path:
    return repo.path / "clones" / name


def _remove_folder(folder: Path) -> None:
    import shutil  # not at the top: `cairn delete` imports this module only to ask the catalog

    shutil.rmtree(folder, ignore_errors=True)


def create_clone(repo: Repository, point: RecoveryPoint, name: str | None = None) -> Clone:
    name = name or f"{point.volume}-{point.id[:6]}-{os.urandom(3).hex()}"
    if not _NAME.match(name):
        raise UsageError(f"invalid clone name {name!r}: use letters, digits, '.', '_', '-'")
    if repo.catalog.clones(name=name):
        raise UsageError(f"a clone named {name!r} exists: choose another name or remove it")
    folder = _folder(repo, name)
    _remove_folder(folder)
    folder.mkdir(parents=True)
    with open(folder / "overlay.img", "wb") as f:
        f.truncate(point.size)
    blocks = -(-point.size // repo.block_size)
    (folder / "map").write_bytes(bytes(-(-blocks // 8)))
    clone = Clone(name, point.id, time.time())
    if not repo.catalog.add_clone(clone.name, clone.point_id, clone.created):
        raise UsageError(f"a clone named {name!r} exists: choose another name or remove it")
    return clone


def list_clones(repo: Repository, point_id: str | None = None) -> list[Clone]:
    return [Clone(*r) for r in repo.catalog.clones(point_id)]


def get_clone(repo: Repository, name: str) -> Clone:
    rows = repo.catalog.clones(name=name)
    if not rows:
        raise CloneNotFound(name)
    return Clone(*rows[0])


def remove_clone(repo: Repository, name: str) -> None:
    clone = get_clone(repo, name)
    repo.catalog.remove_clone(clone.name)
    _remove_folder(_folder(repo, clone.name))


def refuse_if_cloned(repo: Repository, point: RecoveryPoint) -> None:
    clones = list_clones(repo, point.id)
    if clones:
        names = ", ".join(c.name for c in clones)
        raise InUse(f"point {point.id} has clone(s) {names}: remove them first with "
                    "`cairn clone-rm`")


class CloneVolume:
    """Block-level reads and writes of one clone; safe to share between threads."""

    def __init__(self, repo: Repository, clone: Clone) -> None:
        point = repo.catalog.point(clone.point_id)
        if point is None:
            raise InUse(f"clone {clone.name} lost its point {clone.point_id}")
        self.clone = clone
        self.base = PointReader(repo, point)
        self.size = point.size
        self.block_size = repo.block_size
        self._folder = _folder(repo, clone.name)
        self._fd = os.open(self._folder / "overlay.img", os.O_RDWR | os.O_CLOEXEC)
        self._map = bytearray((self._folder / "map").read_bytes())
        self._lock = threading.Lock()

    def close(self) -> None:
        os.close(self._fd)
        self.base.close()

    def __enter__(self) -> CloneVolume:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _written(self, block: int) -> bool:
        return bool(self._map[block >> 3] & (1 << (block & 7)))

    def _block_len(self, block: int) -> int:
        return min(self.block_size, self.size - block * self.block_size)

    def pread(self, offset: int, length: int) -> bytes:
        """Each run of written blocks from the overlay, each run of untouched ones from
        the point in one read (so the point's reader batches it and reads ahead)."""
        bs = self.block_size
        out = bytearray()
        pos, end = offset, offset + length
        while pos < end:
            written = self._written(pos // bs)
            stop = min((pos // bs + 1) * bs, end)
            while stop < end and self._written(stop // bs) == written:
                stop = min(stop + bs, end)
            out += (os.pread(self._fd, stop - pos, pos) if written
                    else self.base.pread(pos, stop - pos))
            pos = stop
        return bytes(out)

    def pwrite(self, offset: int, data: bytes) -> None:
        bs = self.block_size
        with self._lock:
            pos, end, view = offset, offset + len(data), memoryview(data)
            while pos < end:
                block = pos // bs
                start = block * bs
                stop = min(start + bs, end)
                piece = view[pos - offset : stop - offset]
                if not self._written(block) and (pos != start or stop - start
                                                  != self._block_len(block)):
                    whole = bytearray(self.base.pread(start, self._block_len(block)))
                    whole[pos - start : stop - start] = piece
                    os.pwrite(self._fd, whole, start)
                else:
                    os.pwrite(self._fd, piece, pos)
                self._map[block >> 3] |= 1 << (block & 7)
                pos = stop

    def flush(self) -> None:
        with self._lock:
            os.fsync(self._fd)
            tmp = self._folder / "map.tmp"
            with open(tmp, "wb") as f:
                f.write(self._map)
                f.flush()
                os.fsync(f.fileno())
            tmp.rename(self._folder / "map")

    def written_ranges(self) -> list[tuple[int, int]]:
        """``(offset, length)`` of every block written since the clone was made, in order."""
        bs = self.block_size
        blocks = -(-self.size // bs)
        return [(b * bs, self._block_len(b)) for b in range(blocks) if self._written(b)]

    def is_hole(self, block: int, digest: bytes) -> bool:
        """A block reads as zeros without being stored: untouched and empty in the point."""
        return not self._written(block) and digest == ZERO
