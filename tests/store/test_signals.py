"""Block signals (`cairn.store.signals`) go with their point, whichever way it goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.store import signals
from cairn.store.delete import delete_points
from cairn.store.repository import Repository
from tests.store.helpers import backup, make_image


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(tmp_path / "repo")


def rows(repo: Repository) -> dict[str, int]:
    return dict(repo.catalog.db.execute("SELECT point_id, changed_blocks FROM point_signals"))


def test_a_deleted_points_signals_go_and_the_others_stay(repo: Repository,
                                                         tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    points = []
    for seed in range(3):
        make_image(image, 300_000, seed=seed)
        points.append(backup(repo, "vol", image))
    signals.ensure(repo)
    for n, point in enumerate(points):
        signals.record(repo, point, signals.Signals(100 + n, n, n))
    delete_points(repo, [points[1]])
    assert rows(repo) == {points[0].id: 100, points[2].id: 102}
    repo.catalog.forget_points([points[2].id])  # a cloud cache's or a damaged point's path
    assert rows(repo) == {points[0].id: 100}


def test_signals_kept_before_the_trigger_lose_their_orphans(repo: Repository,
                                                            tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_image(image, 300_000, seed=4)
    point = backup(repo, "vol", image)
    signals.ensure(repo)
    with repo.catalog.transaction() as db:  # as a repository of an older cairn has them
        db.execute("DROP TRIGGER point_signals_gone")
        db.execute("INSERT INTO point_signals VALUES('0123456789ab', ?, 7, 0, 0)",
                   (point.volume_id,))
    signals.record(repo, point, signals.Signals(9, 0, 0))
    signals.ensure(repo)
    assert rows(repo) == {point.id: 9}
