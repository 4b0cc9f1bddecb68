"""The store's promises: whole points, incremental forever, cheap local deletes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn.errors import Corruption, MissingChunk
from cairn.restore import writer
from cairn.store.catalog import ChunkTotals
from cairn.store.chunks import chunk_name
from cairn.store.cloud import init_cloud
from cairn.store.delete import delete_points
from cairn.store.readahead import FIRST_WINDOW
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from cairn.store.stats import repository_stats
from cairn.store.verify import verify
from tests.s3server import SeaweedS3
from tests.store.helpers import (
    BLOCK,
    backup,
    count_fetches,
    digest,
    flip_bit,
    make_image,
    mutate,
    restored_digest,
    rewrite,
)


@pytest.fixture(params=["local", "s3"])
def repo(request: pytest.FixtureRequest, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Repository]:
    """Every promise below holds for a local repository and for one in a bucket."""
    if request.param == "local":
        with Repository.init(tmp_path / "repo") as local:
            yield local
        return
    server: SeaweedS3 = request.getfixturevalue("s3_server")
    for name, value in (("CAIRN_S3_ACCESS_KEY", server.access_key),
                        ("CAIRN_S3_SECRET_KEY", server.secret_key),
                        ("CAIRN_CACHE", str(tmp_path / "cache")),
                        ("CAIRN_KEYS", str(tmp_path / "keys"))):
        monkeypatch.setenv(name, value)
    url = f"s3://{server.bucket}/store-{uuid.uuid4().hex}"
    with init_cloud(url, server.endpoint) as cloud:
        yield cloud


def test_every_point_restores_whole(repo: Repository, tmp_path: Path) -> None:
    img = tmp_path / "img"
    data = make_image(img, 3 * 1024 * 1024 + 777, seed=1)
    expected = []
    for k in range(6):
        point = backup(repo, "vol", img)
        expected.append((point, digest(data)))
        mutate(img, data, seed=100 + k)
    for point, want in expected:
        assert restored_digest(repo, point, tmp_path / "out") == want
    assert verify(repo, read_data=True).ok


def test_a_restore_sent_to_disk_as_it_goes_is_whole(repo: Repository, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The restore starts the write-back of what it wrote every WRITEBACK bytes, from the
    store's reading threads at once; the image is whole all the same, holes and a block
    used in many places included."""
    monkeypatch.setattr(writer, "WRITEBACK", 3 * BLOCK)
    img = tmp_path / "img"
    data = make_image(img, 4 * 1024 * 1024 + 5, seed=7)
    for off in range(BLOCK, len(data) - BLOCK, 7 * BLOCK):
        data[off : off + BLOCK] = data[:BLOCK]
    img.write_bytes(data)
    point = backup(repo, "vol", img)
    assert restored_digest(repo, point, tmp_path / "out") == digest(data)


def test_incremental_reads_and_stores_only_changes(repo: Repository, tmp_path: Path) -> None:
    img = tmp_path / "img"
    data = make_image(img, 4 * 1024 * 1024, seed=2, fill=1.0)
    first = backup(repo, "vol", img)
    assert first.bytes_read == len(data)
    ranges = mutate(img, data, seed=3, writes=2)
    tracked = backup(repo, "vol", img, ranges)
    assert tracked.bytes_read <= sum(-(-r[1] // BLOCK) + 1 for r in ranges) * BLOCK
    assert 0 < tracked.bytes_stored < 8 * BLOCK + 4096
    assert restored_digest(repo, tracked, tmp_path / "out") == digest(data)
    same = backup(repo, "vol", img, [])
    assert same.bytes_read == 0 and same.bytes_stored == 0
    scanned = backup(repo, "vol", img)
    assert scanned.bytes_read == len(data) and scanned.bytes_stored == 0


def test_zero_blocks_are_not_stored_and_dedup_is_global(repo: Repository,
                                                        tmp_path: Path) -> None:
    img = tmp_path / "img"
    make_image(img, 8 * 1024 * 1024, seed=4, fill=0.25)
    a = backup(repo, "a", img)
    b = backup(repo, "b", img)
    assert b.bytes_stored == 0
    stats = repository_stats(repo)
    assert stats.unique_bytes < 0.3 * 8 * 1024 * 1024 + 64 * 1024
    assert stats.dedup_ratio == pytest.approx(2.0, rel=0.05)
    assert a.allocated == b.allocated


@pytest.mark.parametrize("victims", [[0], [2], [4], [1, 3], [0, 1, 2, 3, 4], [4, 0, 2]])
def test_delete_any_point_keeps_the_others_whole(repo: Repository, tmp_path: Path,
                                                  victims: list[int]) -> None:
    img = tmp_path / "img"
    data = make_image(img, 2 * 1024 * 1024, seed=5)
    points = []
    for k in range(5):
        points.append((backup(repo, "vol", img), digest(data)))
        # Change back and forth so neighbours share chunks (the a-b-a case).
        mutate(img, data, seed=200 + (k % 2), writes=3)
    for v in victims:
        delete_points(repo, [points[v][0]])
        report = verify(repo, read_data=True)
        assert report.ok, report.problems
    for k, (point, want) in enumerate(points):
        if k not in victims:
            assert restored_digest(repo, point, tmp_path / "out") == want
    if len(victims) == len(points):
        assert repo.catalog.chunk_totals() == ChunkTotals(0, 0, 0, 0, 0)
        # a cloud repository frees whole packs, in a cloud prune (`cloud_prune`)
        assert repo.remote is not None or list(repo.chunks.backend.list("chunks")) == []


def test_size_change_between_points(repo: Repository, tmp_path: Path) -> None:
    img = tmp_path / "img"
    sizes = [1_000_000, 3_000_000, 700_000, 3_000_000]
    points = []
    for k, size in enumerate(sizes):
        data = make_image(img, size, seed=10 + k % 2)
        points.append((backup(repo, "vol", img), digest(data)))
    delete_points(repo, [points[1][0]])
    delete_points(repo, [points[2][0]])
    assert verify(repo, read_data=True).ok
    for point, want in (points[0], points[3]):
        assert restored_digest(repo, point, tmp_path / "out") == want


def test_reader_reads_any_range(repo: Repository, tmp_path: Path) -> None:
    img = tmp_path / "img"
    data = make_image(img, 1_500_000, seed=6)
    reader = PointReader(repo, backup(repo, "vol", img))
    for off, n in [(0, 10), (65535, 2), (100_000, 300_000), (1_499_990, 10), (0, 1_500_000)]:
        assert reader.pread(off, n) == bytes(data[off : off + n])
    runs = reader.extents(0, len(data))
    assert sum(n for n, _ in runs) == len(data)


def test_small_reads_of_one_block_fetch_it_once(repo: Repository, tmp_path: Path) -> None:
    """A block read in 4 KiB pieces (as a booting machine does) is fetched and checked once,
    and every piece is still the image's bytes. Reads running on into the next block also
    fetch the FIRST_WINDOW blocks after it, each once too."""
    img = tmp_path / "img"
    data = make_image(img, 1024 * 1024, seed=16, fill=1.0)
    point = backup(repo, "vol", img)
    fetched = count_fetches(repo)
    with PointReader(repo, point) as reader:  # closing waits for the read-ahead
        pieces = [reader.pread(off, 4096) for off in range(0, 65536 * 2, 4096)]
    assert b"".join(pieces) == bytes(data[: 65536 * 2])
    assert len(fetched) == len(set(fetched)) == 2 + FIRST_WINDOW


def test_two_interleaved_streams_read_ahead_each_block_once(repo: Repository,
                                                            tmp_path: Path) -> None:
    """Two connections copying two halves of a disk (as nbdcopy does) in 256 KiB reads,
    turn by turn: each block is fetched once, every read after the first two of each half
    is served by the read-ahead (nothing fetched on the reading thread), and the bytes are
    the image's."""
    img = tmp_path / "img"
    data = make_image(img, 4 * 1024 * 1024, seed=18, fill=1.0)
    point = backup(repo, "vol", img)
    fetched = count_fetches(repo)
    readers: list[str] = []  # the thread of each fetch
    counting = repo.chunks.get_many_kept

    def get_many(digests: list[bytes], each: Callable[[bytes, bytes], bytes]
                 ) -> Iterator[bytes]:
        readers.append(threading.current_thread().name)
        return counting(digests, each)

    repo.chunks.get_many_kept = get_many  # type: ignore[method-assign]
    half, step = len(data) // 2, 4 * BLOCK
    with PointReader(repo, point) as reader:  # closing waits for the read-ahead
        for offset in range(0, half, step):
            for base in (0, half):
                got = reader.pread(base + offset, step)
                assert got == bytes(data[base + offset : base + offset + step])
    assert sorted(fetched) == sorted(set(fetched)) and len(fetched) == len(data) // BLOCK
    assert readers.count(threading.current_thread().name) == 4  # two reads per half


def test_damage_met_by_read_ahead_fails_only_the_read_that_needs_it(
        repo: Repository, tmp_path: Path) -> None:
    """Read-ahead fetches blocks nobody asked for yet: a damaged one among them is named by
    the read of that block, and its neighbours read as the image's bytes."""
    img = tmp_path / "img"
    data = make_image(img, 1024 * 1024, seed=17, fill=1.0)
    point = backup(repo, "vol", img)
    with PointReader(repo, point) as reader:
        flip_bit(repo, dict(reader.block_hashes())[3])
        assert reader.pread(0, BLOCK) == bytes(data[:BLOCK])
        assert reader.pread(BLOCK, BLOCK) == bytes(data[BLOCK : 2 * BLOCK])  # reads 2..9 ahead
        assert reader.pread(2 * BLOCK, BLOCK) == bytes(data[2 * BLOCK : 3 * BLOCK])
        with pytest.raises(Corruption):
            reader.pread(3 * BLOCK, 10)
        assert reader.pread(4 * BLOCK, BLOCK) == bytes(data[4 * BLOCK : 5 * BLOCK])


def test_flipped_bit_is_found_and_named(repo: Repository, tmp_path: Path) -> None:
    img = tmp_path / "img"
    data = make_image(img, 1024 * 1024, seed=7, fill=1.0)
    first = backup(repo, "vol", img)
    mutate(img, data, seed=8, writes=1)
    second = backup(repo, "vol", img)
    # Damage a chunk that only the first point holds.
    only_first = next(h for i, h in PointReader(repo, first).block_hashes()
                      if h != dict(PointReader(repo, second).block_hashes())[i])
    flip_bit(repo, only_first)
    assert verify(repo).ok  # presence only
    report = verify(repo, read_data=True)
    assert not report.ok
    assert report.damaged == {only_first.hex(): [first.id]}
    rewrite(repo, only_first, None)
    with pytest.raises(MissingChunk):
        PointReader(repo, first).pread(0, len(data))


def test_damaged_repository_fixtures(repo: Repository, tmp_path: Path) -> None:
    """restic's checker cases: a truncated chunk, a catalog row with no chunk, an orphan."""
    img = tmp_path / "img"
    make_image(img, 1024 * 1024, seed=9, fill=1.0)
    point = backup(repo, "vol", img)
    hashes = [h for _, h in PointReader(repo, point).block_hashes()]
    rewrite(repo, hashes[0], repo.chunks.backend.get(chunk_name(hashes[0]))[:-10])
    rewrite(repo, hashes[1], None)
    rewrite(repo, hashes[7], None)  # a read that meets several missing chunks goes on
    rewrite(repo, bytes(range(32)), b"CRN\x00stray")
    quick = verify(repo)
    assert [p for p in quick.problems if hashes[1].hex() in p] and quick.orphans == 1
    full = verify(repo, read_data=True)
    assert set(full.damaged) == {hashes[0].hex(), hashes[1].hex(), hashes[7].hex()}
    assert full.chunks > len(set(hashes)) and full.bytes_read > 0  # data and tree nodes
    assert all(points == [point.id] for points in full.damaged.values())
