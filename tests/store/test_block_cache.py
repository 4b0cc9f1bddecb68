"""The decoded-block cache: held bytes stay within its bound, reads stay the image's bytes,
and a point that fits is read a second time without fetching a block."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

from cairn.store.backend import T
from cairn.store.reader import BlockCache, PointReader
from cairn.store.repository import Repository
from tests.store.helpers import BLOCK, backup, make_image

SIZE = 40 * BLOCK + 1000  # a short last block too


def _counting(repo: Repository) -> list[bytes]:
    """Every digest the chunk store is asked for from now on."""
    fetched: list[bytes] = []
    real_get_many = repo.chunks.get_many

    def counting_get_many(digests: list[bytes], each: Callable[[bytes, bytes], T]
                          ) -> Iterator[T]:
        fetched.extend(digests)
        return real_get_many(digests, each)

    repo.chunks.get_many = counting_get_many  # type: ignore[method-assign]
    return fetched


def test_cache_never_holds_more_than_its_bound(tmp_path: Path) -> None:
    data = make_image(tmp_path / "img", SIZE, seed=41, fill=1.0)
    bound = 5 * BLOCK + 123
    rnd = random.Random(41)
    with Repository.init(tmp_path / "repo") as repo:
        point = backup(repo, "vol", tmp_path / "img")
        cache = BlockCache(repo.chunks, bound)
        with PointReader(repo, point, cache) as reader:
            for _ in range(60):
                offset = rnd.randrange(SIZE)
                length = rnd.choice((1, 4096, BLOCK, 3 * BLOCK + 7))
                assert reader.pread(offset, length) == bytes(data[offset : offset + length])
                assert 0 < cache.held <= bound
            assert reader.pread(0, SIZE) == bytes(data)
        cache.close()
        assert cache.held <= bound


def test_a_point_that_fits_is_read_again_without_fetching(tmp_path: Path) -> None:
    data = make_image(tmp_path / "img", SIZE, seed=42, fill=0.7)
    with Repository.init(tmp_path / "repo") as repo:
        point = backup(repo, "vol", tmp_path / "img")
        cache = BlockCache(repo.chunks, SIZE)
        with PointReader(repo, point, cache) as reader:
            first = [reader.pread(offset, BLOCK) for offset in range(0, SIZE, BLOCK)]
            fetched = _counting(repo)
            again = [reader.pread(offset, BLOCK) for offset in range(0, SIZE, BLOCK)]
        cache.close()
    assert b"".join(first) == b"".join(again) == bytes(data)
    assert fetched == []
