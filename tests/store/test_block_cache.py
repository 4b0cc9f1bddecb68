"""The decoded-block cache: held bytes stay within its bound, reads stay the image's bytes,
and a point that fits is read a second time without fetching a block."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from cairn.errors import Corruption
from cairn.store.reader import BlockCache, PointReader
from cairn.store.repository import Repository
from tests.store.helpers import BLOCK, backup, count_fetches, flip_bit, make_image

SIZE = 40 * BLOCK + 1000  # a short last block too


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
            fetched = count_fetches(repo)
            again = [reader.pread(offset, BLOCK) for offset in range(0, SIZE, BLOCK)]
        cache.close()
    assert b"".join(first) == b"".join(again) == bytes(data)
    assert fetched == []


def test_pieces_without_waiting_answer_only_what_is_held(tmp_path: Path) -> None:
    data = make_image(tmp_path / "img", SIZE, seed=43, fill=0.6)
    ranges = [(0, SIZE), (5, 1), (BLOCK - 3, 7), (2 * BLOCK + 100, 5 * BLOCK), (SIZE - 10, 50)]
    with Repository.init(tmp_path / "repo") as repo:
        point = backup(repo, "vol", tmp_path / "img")
        cache = BlockCache(repo.chunks, 2 * SIZE)
        with PointReader(repo, point, cache) as reader:
            assert reader.pieces(0, 3 * BLOCK, wait=False) is None  # nothing read yet
            for offset, length in ranges:
                pieces = reader.pieces(offset, length)
                assert pieces is not None
                assert b"".join(pieces) == bytes(data[offset : offset + length])
            fetched = count_fetches(repo)
            for offset, length in ranges:
                held = reader.pieces(offset, length, wait=False)
                assert held is not None
                assert b"".join(held) == bytes(data[offset : offset + length])
        cache.close()
    assert fetched == []


def test_a_kept_block_stored_as_is_holds_only_its_own_bytes_and_a_flipped_one_is_refused(
        tmp_path: Path) -> None:
    """Random blocks are stored as is, and the cache keeps each as a view of its own read
    (no copy), never of a read of its neighbours; a flipped bit in one is refused, and the
    blocks around it still read right."""
    data = make_image(tmp_path / "img", SIZE, seed=44, fill=1.0)
    with Repository.init(tmp_path / "repo") as repo:
        point = backup(repo, "vol", tmp_path / "img")
        cache = BlockCache(repo.chunks, 2 * SIZE)
        with PointReader(repo, point, cache) as reader:
            hashes = [digest for _block, digest in reader.block_hashes()]
            flip_bit(repo, hashes[3])
            with pytest.raises(Corruption):
                reader.pread(3 * BLOCK + 10, 100)
            assert reader.pread(0, 3 * BLOCK) == bytes(data[: 3 * BLOCK])
            assert reader.pread(4 * BLOCK, 8 * BLOCK) == bytes(data[4 * BLOCK : 12 * BLOCK])
            held = cache.held_blocks(hashes[:3] + hashes[4:12], b"")
        cache.close()
    assert held is not None
    assert [len(memoryview(block).obj) for block in held] == [BLOCK + 4] * 11
