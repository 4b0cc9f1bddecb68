"""Small images and repositories for the store tests."""

from __future__ import annotations

import contextlib
import hashlib
import random
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from cairn.restore.writer import restore_image
from cairn.sources.image import ImageSource
from cairn.store.backend import T
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import chunk_name
from cairn.store.cloud_packs import CloudPacks
from cairn.store.ingest import Ingest
from cairn.store.reader import PointReader
from cairn.store.repository import Repository

BLOCK = 64 * 1024


def make_image(path: Path, size: int, seed: int, fill: float = 0.5) -> bytearray:
    """An image where about ``fill`` of the blocks hold random data, the rest zeros."""
    rnd = random.Random(seed)
    data = bytearray(size)
    for off in range(0, size, BLOCK):
        if rnd.random() < fill:
            n = min(BLOCK, size - off)
            data[off : off + n] = rnd.randbytes(n)
    path.write_bytes(data)
    return data


def mutate(path: Path, data: bytearray, seed: int, writes: int = 5) -> list[list[int]]:
    """Overwrite a few random ranges in place; returns them as changed ranges."""
    rnd = random.Random(seed)
    ranges = []
    for _ in range(writes):
        length = rnd.randrange(1, 3 * BLOCK)
        off = rnd.randrange(0, len(data) - length)
        data[off : off + length] = rnd.randbytes(length)
        ranges.append([off, length])
    path.write_bytes(data)
    return ranges


def backup(repo: Repository, volume: str, path: Path,
           ranges: list[list[int]] | None = None) -> RecoveryPoint:
    with ImageSource(path) as src:
        return Ingest(repo, volume, src).run(
            [tuple(r) for r in ranges] if ranges is not None else None)  # type: ignore[misc]


def restored_digest(repo: Repository, point: RecoveryPoint, out: Path) -> str:
    restore_image(PointReader(repo, point), out)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def digest(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def pack_of(repo: Repository, digest_: bytes) -> Path:
    """The pack file holding a chunk, read from the packs' index as a repair tool would."""
    with contextlib.closing(sqlite3.connect(repo.path / "packs.db")) as db:
        row = db.execute("SELECT pack FROM objects WHERE name=?",
                         (chunk_name(digest_),)).fetchone()
    return repo.path / "packs" / row[0]


def flip_bit(repo: Repository, digest: bytes) -> None:
    """Damage a stored chunk, as a failing disk would: one bit of its stored bytes flips."""
    stored = bytearray(repo.chunks.backend.get(chunk_name(digest)))
    stored[len(stored) // 2] ^= 0x10
    rewrite(repo, digest, bytes(stored))


def rewrite(repo: Repository, digest: bytes, data: bytes | None) -> None:
    """Replace (or, with ``None``, remove) a stored chunk's bytes behind the catalog's back.
    A cloud repository's chunk is lost when no index says where it lies in its pack."""
    backend = repo.chunks.backend
    if data is not None:
        backend.put(chunk_name(digest), data, replace=True)
    elif isinstance(backend, CloudPacks):
        with contextlib.closing(sqlite3.connect(repo.path / "pack-index.db")) as db, db:
            db.execute("DELETE FROM chunks WHERE digest = ?", (digest,))
    else:
        backend.delete(chunk_name(digest))
    backend.sync()


def count_fetches(repo: Repository) -> list[bytes]:
    """Every digest the chunk store is asked for from now on: the proof that a read was served
    from a cache or read ahead."""
    fetched: list[bytes] = []
    chunks = repo.chunks

    def counting(real: Callable[[list[bytes], Callable[[bytes, bytes], T]], Iterator[T]]
                 ) -> Callable[[list[bytes], Callable[[bytes, bytes], T]], Iterator[T]]:
        def get(digests: list[bytes], each: Callable[[bytes, bytes], T]) -> Iterator[T]:
            fetched.extend(digests)
            return real(digests, each)

        return get

    chunks.get_many_kept = counting(chunks.get_many_kept)  # type: ignore[method-assign]
    chunks.get_many = counting(chunks.get_many)  # type: ignore[method-assign]
    return fetched
