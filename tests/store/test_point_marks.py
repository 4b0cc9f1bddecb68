"""A point's marks (`cairn.store.marks`) go with it, whichever way it goes; the orphans an
older cairn left go once, but never from a repository opened read-only."""

from __future__ import annotations

from pathlib import Path

from cairn.store import marks
from cairn.store.delete import delete_points, purge_expired
from cairn.store.repository import Repository
from tests.store.helpers import backup, make_image


def rows(repo: Repository) -> set[str]:
    return {r[0] for r in repo.catalog.db.execute("SELECT point_id FROM point_marks")}


def test_a_deleted_purged_or_forgotten_points_marks_go_and_the_others_stay(
        tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with Repository.init(tmp_path / "repo") as repo:
        points = []
        for seed in range(4):
            make_image(image, 300_000, seed=seed)
            points.append(backup(repo, "vol", image))
        for point in points:
            marks.flag(repo, point, ["entropy"])
        assert rows(repo) == {p.id for p in points}
        delete_points(repo, [points[1]])
        assert rows(repo) == {points[0].id, points[2].id, points[3].id}
        marks.hold(repo, [points[2]], window=0)  # deleted, then purged once its window passed
        purge_expired(repo)
        assert repo.catalog.point(points[2].id) is None
        assert rows(repo) == {points[0].id, points[3].id}
        repo.catalog.forget_points([points[3].id])  # a cloud cache's path
        assert rows(repo) == {points[0].id}
        assert marks.marks_of(repo, points[0].id).flags == ("entropy",)


def test_orphans_kept_before_the_trigger_go_once_but_not_read_only(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    make_image(image, 300_000, seed=4)
    with Repository.init(tmp_path / "repo") as repo:
        point = backup(repo, "vol", image)
        marks.flag(repo, point, ["entropy"])
        with repo.catalog.transaction() as db:  # as a repository of an older cairn has them
            db.execute("DROP TRIGGER point_marks_gone")
            db.execute("INSERT INTO point_marks(point_id, flags) VALUES('0123456789ab', '[]')")
    with Repository.open(tmp_path / "repo", read_only=True) as seen:
        assert set(marks.all_marks(seen)) == {point.id}
        assert rows(seen) == {point.id, "0123456789ab"}  # nothing written
    with Repository.open(tmp_path / "repo") as repo:
        assert set(marks.all_marks(repo)) == {point.id}
        assert rows(repo) == {point.id}
        assert repo.catalog.db.execute("SELECT 1 FROM sqlite_master WHERE type='trigger' "
                                       "AND name='point_marks_gone'").fetchone()
