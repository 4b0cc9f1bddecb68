"""Locks and deletion defense as a user (or an intruder with their login) meets them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import cairn, ok, one_line_error
from tests.store.helpers import make_image, mutate


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    ok("init", "--repo", path)
    return path


def backups(repo: Path, tmp_path: Path, count: int) -> list[tuple[str, bytes]]:
    img = tmp_path / "disk.img"
    data = make_image(img, 2 * 1024 * 1024, seed=5, fill=0.7)
    points = []
    for k in range(count):
        point = json.loads(ok("backup", "--repo", repo, "--volume", "web01-sda", img,
                              "--json"))["point"]
        points.append((point, bytes(data)))
        mutate(img, data, seed=100 + k, writes=6)
    return points


def listed(repo: Path, *extra: str) -> list[dict[str, Any]]:
    return list(json.loads(ok("points", "--repo", repo, "--json", *extra)))


def test_a_locked_point_survives_delete_prune_and_unlock_until_its_date(
        repo: Path, tmp_path: Path) -> None:
    points = backups(repo, tmp_path, 3)
    first, second = points[0][0], points[1][0]
    ok("lock", "--repo", repo, first, "--until", "2099-06-30")
    ok("lock", "--repo", repo, second, "--until", "8s")
    second_free = time.time() + 8
    pruned = json.loads(ok("prune", "--repo", repo, "--volume", "web01-sda", "--keep-last",
                           "1", "--json"))
    assert pruned["deleted"] == []
    kept = {k["id"]: k["rules"] for k in pruned["kept"]}
    assert kept[first] == ["locked until 2099-06-30"]
    assert kept[second][0].startswith("locked until")

    for args in ((first,), ("--now", first)):
        one_line_error(cairn("delete", "--repo", repo, *args), 1, first,
                       "locked until 2099-06-30")
    one_line_error(cairn("unlock", "--repo", repo, first), 1, "locked until")
    one_line_error(cairn("lock", "--repo", repo, first, "--until", "2098-01-01"), 1,
                   "locked until 2099")
    one_line_error(cairn("lock", "--repo", repo, first, "--until", "someday"), 2, "--until")
    by_id = {p["id"]: p for p in listed(repo)}
    assert time.gmtime(by_id[first]["locked_until"])[:3] == (2099, 6, 30)
    assert by_id[points[2][0]]["locked_until"] is None
    assert by_id[first]["flagged"] is False and by_id[first]["flag_reasons"] == []

    time.sleep(max(0.0, second_free - time.time()) + 0.5)  # its lock passed: it goes now
    ok("unlock", "--repo", repo, second)
    pruned = json.loads(ok("prune", "--repo", repo, "--volume", "web01-sda", "--keep-last",
                           "1", "--json"))
    assert pruned["deleted"] == [second]
    assert pruned["held_until"] > time.time() + 2 * 86400  # pruned = held, as deleted
    assert [p["id"] for p in listed(repo)] == [first, points[2][0]]
    assert [p["id"] for p in listed(repo, "--deleted")] == [second]
    out = tmp_path / "out.img"
    ok("restore", "--repo", repo, first, out)
    assert out.read_bytes() == points[0][1]
    assert "no problems found" in ok("verify", "--repo", repo, "--read-data")


def test_a_deleted_point_is_held_restorable_then_reclaimed(repo: Path, tmp_path: Path) -> None:
    points = backups(repo, tmp_path, 3)
    victim, data = points[1]
    stored_before = json.loads(ok("stats", "--repo", repo, "--json"))["stored_bytes"]
    ok("delete", "--repo", repo, victim)
    assert victim not in [p["id"] for p in listed(repo)]
    held = listed(repo, "--deleted")
    assert [p["id"] for p in held] == [victim]
    assert held[0]["purge_after"] - held[0]["deleted_at"] == 3 * 86400
    stats = json.loads(ok("stats", "--repo", repo, "--json"))
    assert stats["points"] == 2 and stats["deleted_points"] == 1
    assert stats["deleted_frees_bytes"] > 0 and stats["stored_bytes"] == stored_before
    out = tmp_path / "out.img"
    ok("restore", "--repo", repo, victim, out)  # still whole while held
    assert out.read_bytes() == data
    ok("undelete", "--repo", repo, victim)
    assert [p["id"] for p in listed(repo)] == [p for p, _ in points]
    one_line_error(cairn("undelete", "--repo", repo, victim), 2, "not deleted")

    # A short window: once it passes, the next write command reclaims the point.
    short = cairn("delete", "--repo", repo, victim, env={"CAIRN_DELETE_WINDOW": "1s"})
    assert short.returncode == 0, short.stderr
    time.sleep(1.5)
    ok("delete", "--repo", repo, points[0][0])
    assert [p["id"] for p in listed(repo, "--deleted")] == [points[0][0]]
    one_line_error(cairn("undelete", "--repo", repo, victim), 2, "no recovery point")
    stats = json.loads(ok("stats", "--repo", repo, "--json"))
    assert stats["stored_bytes"] < stored_before
    assert "no problems found" in ok("verify", "--repo", repo, "--read-data")
    ok("restore", "--repo", repo, points[2][0], out, "--force")
    assert out.read_bytes() == points[2][1]


def test_delete_now_frees_at_once_but_never_a_locked_point(repo: Path, tmp_path: Path) -> None:
    points = backups(repo, tmp_path, 2)
    ok("lock", "--repo", repo, points[1][0], "--until", "30d")
    one_line_error(cairn("delete", "--repo", repo, "--now", points[0][0], points[1][0]), 1,
                   "locked")
    assert len(listed(repo)) == 2  # nothing went: the refusal comes first
    ok("delete", "--repo", repo, "--now", points[0][0])
    assert listed(repo, "--deleted") == []
    assert [p["id"] for p in listed(repo)] == [points[1][0]]


def test_volume_at_latest_never_names_a_deleted_point(repo: Path, tmp_path: Path) -> None:
    (older, older_data), (newest, _data) = backups(repo, tmp_path, 2)
    ok("delete", "--repo", repo, "web01-sda@latest")
    assert [p["id"] for p in listed(repo, "--deleted")] == [newest]
    out = tmp_path / "out.img"
    ok("restore", "--repo", repo, "web01-sda@latest", out)
    assert out.read_bytes() == older_data
    ok("delete", "--repo", repo, "web01-sda@latest")
    assert [p["id"] for p in listed(repo, "--deleted")] == [newest, older]
    one_line_error(cairn("restore", "--repo", repo, "web01-sda@latest", out, "--force"), 2,
                   "web01-sda@latest")
