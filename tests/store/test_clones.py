"""Clones: constant-time, writable, and never a single byte of change to their point."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cairn.errors import InUse
from cairn.store.clones import CloneVolume, create_clone, list_clones, remove_clone
from cairn.store.delete import delete_points
from cairn.store.repository import Repository
from cairn.store.verify import verify
from tests.store.helpers import backup, digest, make_image, restored_digest


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(tmp_path / "repo")


def test_clone_writes_stay_in_the_clone(repo: Repository, tmp_path: Path) -> None:
    img = tmp_path / "img"
    data = make_image(img, 1_000_000, seed=1)
    point = backup(repo, "vol", img)
    clone = create_clone(repo, point, "c1")
    vol = CloneVolume(repo, clone)
    model = bytearray(data)
    for off, payload in [(0, b"x" * 10), (65530, b"y" * 20), (200_000, os.urandom(150_000)),
                         (999_990, b"z" * 10)]:
        vol.pwrite(off, payload)
        model[off : off + len(payload)] = payload
    assert vol.pread(0, len(model)) == bytes(model)
    for off, n in [(5, 70_000), (65_000, 200_000), (349_990, 20), (999_000, 1000)]:
        assert vol.pread(off, n) == bytes(model[off : off + n])  # across written and not
    vol.flush()
    vol.close()
    reopened = CloneVolume(repo, clone)
    assert reopened.pread(0, len(model)) == bytes(model)
    reopened.close()
    assert restored_digest(repo, point, tmp_path / "out") == digest(data)
    assert verify(repo, read_data=True).ok


def test_point_with_clone_cannot_be_deleted_until_clone_removed(repo: Repository,
                                                                 tmp_path: Path) -> None:
    img = tmp_path / "img"
    make_image(img, 300_000, seed=2)
    point = backup(repo, "vol", img)
    clone = create_clone(repo, point)
    with pytest.raises(InUse, match="clone-rm"):
        delete_points(repo, [point])
    remove_clone(repo, clone.name)
    assert list_clones(repo) == []
    assert not (repo.path / "clones" / clone.name).exists()
    delete_points(repo, [point])
    assert repo.catalog.points() == []


def test_clone_creation_is_constant_in_volume_size(repo: Repository, tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(4 << 30)  # 4 GiB of holes: stored as one ZERO tree
    point = backup(repo, "big", big)
    clone = create_clone(repo, point)
    folder = repo.path / "clones" / clone.name
    used = sum(os.stat(p).st_blocks * 512 for p in folder.iterdir())
    assert used < 64 * 1024
