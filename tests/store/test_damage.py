"""Damage is quarantined, named and healed, and never makes the repository unmanageable.

Real packs, real SQLite: bytes are flipped, packs truncated or deleted behind cairn's back,
as a failing disk or a careless operator would, and every command a user then reaches for
must work: verify names each damaged point and chunk, a new backup of the same data heals
the damage, restores of damaged points fail naming the blocks (or write zeros there with
``ignore_damage``), damaged points can be deleted, and intact points are untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cairn.errors import DamagedPoint
from cairn.restore.writer import restore_image
from cairn.store.delete import delete_points
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from cairn.store.verify import verify
from tests.store.helpers import (
    BLOCK,
    backup,
    digest,
    flip_bit,
    make_image,
    mutate,
    pack_of,
    restored_digest,
)


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(tmp_path / "repo")


def _blocks(repo: Repository, point_id: str) -> list[bytes]:
    """A point's block hashes, read as another process would: ``repo`` then holds no pack
    open that a test goes on to delete (an open pack reads on after its unlink)."""
    with Repository.open(repo.path) as other:
        return [h for _, h in PointReader(other, other.resolve(point_id)).block_hashes()]


def test_a_flipped_chunk_is_quarantined_and_the_next_backup_heals_it(
        repo: Repository, tmp_path: Path) -> None:
    img = tmp_path / "img"
    data = make_image(img, 1024 * 1024, seed=1, fill=1.0)
    first = backup(repo, "vol", img)
    victim = _blocks(repo, first.id)[3]
    flip_bit(repo, victim)
    report = verify(repo, read_data=True)
    assert report.damaged == {victim.hex(): [first.id]}
    assert report.damaged_points == [first.id]
    assert victim in repo.catalog.bad_chunks()
    second = backup(repo, "vol", img, ranges=[])  # nothing changed, yet the block is read again
    assert second.bytes_stored > 0
    healed = verify(repo, read_data=True)
    assert healed.ok, healed.problems
    assert healed.healed_points == sorted([first.id, second.id])
    assert restored_digest(repo, first, tmp_path / "out") == digest(data)
    assert repo.catalog.bad_chunks() == {} and repo.catalog.healed_chunks() == []
    assert verify(repo, read_data=True).healed == {}


def test_a_deleted_pack_is_named_then_healed_and_the_repository_stays_usable(
        repo: Repository, tmp_path: Path) -> None:
    img = tmp_path / "img"
    data = make_image(img, 1024 * 1024, seed=2, fill=1.0)
    first = backup(repo, "vol", img)
    other = tmp_path / "other"
    other_data = make_image(other, 512 * 1024, seed=3, fill=1.0)
    intact = backup(repo, "other", other)
    pack_of(repo, _blocks(repo, first.id)[0]).unlink()
    quick = verify(repo)  # no crash, no data read: the missing pack is still found
    assert not quick.ok and quick.damaged_points == [first.id]
    assert verify(repo, point=intact).ok
    assert restored_digest(repo, intact, tmp_path / "out") == digest(other_data)
    with pytest.raises(DamagedPoint, match=f"point {first.id} is damaged: 16 block"):
        restore_image(PointReader(repo, first), tmp_path / "out")
    again = backup(repo, "vol", img)  # the block map went with the pack: read it all
    assert again.bytes_stored > 0
    report = verify(repo, read_data=True)
    assert report.ok, report.problems
    assert set(report.healed_points) == {first.id, again.id}
    assert restored_digest(repo, first, tmp_path / "out") == digest(data)


def test_restore_of_a_damaged_point_names_the_blocks_or_writes_zeros(
        repo: Repository, tmp_path: Path) -> None:
    img = tmp_path / "img"
    data = make_image(img, 1024 * 1024, seed=4, fill=1.0)
    point = backup(repo, "vol", img)
    victim = _blocks(repo, point.id)[5]
    flip_bit(repo, victim)
    out = tmp_path / "out"
    with pytest.raises(DamagedPoint, match=r"1 block\(s\) of 65536 bytes: 5 cannot"):
        restore_image(PointReader(repo, point), out)
    assert victim in repo.catalog.bad_chunks()  # a restore quarantines what it meets
    lost = restore_image(PointReader(repo, point), out, ignore_damage=True)
    assert lost == [(5, 5)]
    want = bytearray(data)
    want[5 * BLOCK : 6 * BLOCK] = bytes(BLOCK)
    assert out.read_bytes() == want


@pytest.mark.parametrize("level", [1, 2])  # 2: the walk to every leaf starts under it
def test_a_damaged_block_map_node_names_its_points_and_they_can_be_deleted(
        repo: Repository, tmp_path: Path, level: int) -> None:
    img = tmp_path / "img"
    data = make_image(img, 2 * 1024 * 1024, seed=5, fill=1.0)
    points, wants = [], []
    for k in range(3):
        points.append(backup(repo, "vol", img))
        wants.append(digest(data))
        mutate(img, data, seed=20 + k, writes=2)
    node = repo.nodes.slot(repo.tree(points[0]), level, 0)
    assert node != repo.nodes.slot(repo.tree(points[1]), level, 0)
    flip_bit(repo, node)
    repo.close()  # a new process: nothing of the node is cached
    repo = Repository.open(repo.path)
    report = verify(repo, read_data=True)
    assert node.hex() in report.damaged and report.damaged_points == [points[0].id]
    assert len(report.problems) < 5, report.problems  # named, not a flood of side effects
    lost = restore_image(PointReader(repo, points[0]), tmp_path / "out", ignore_damage=True)
    assert lost == [(0, 31)]
    delete_points(repo, [points[0]])
    latest = backup(repo, "vol", img)
    for point, want in [(points[1], wants[1]), (points[2], wants[2]), (latest, digest(data))]:
        assert restored_digest(repo, point, tmp_path / "out") == want
    after = verify(repo, read_data=True)
    assert after.ok, after.problems


def test_plain_verify_checks_pack_sizes_against_the_index(repo: Repository,
                                                          tmp_path: Path) -> None:
    img = tmp_path / "img"
    make_image(img, 1024 * 1024, seed=6, fill=1.0)
    point = backup(repo, "vol", img)
    pack = pack_of(repo, _blocks(repo, point.id)[0])
    os.truncate(pack, pack.stat().st_size - 100)
    report = verify(repo)
    assert not report.ok and report.damaged_points == [point.id]
    assert report.damaged and report.bytes_read == 0
