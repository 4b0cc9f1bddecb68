"""Locks and deletion holds on a cloud repository are in the bucket: every node obeys them."""

from __future__ import annotations

import json
from pathlib import Path

from cairn.store import marks
from cairn.store.repository import Repository
from tests.cli.test_cli import one_line_error
from tests.replication.test_replicate import Cli, local_repo_with_points
from tests.replication.test_tamper import Bucket
from tests.s3server import SeaweedS3


def test_marks_made_on_one_node_hold_on_another(cli: Cli, cloud_url: str,
                                                s3_server: SeaweedS3, tmp_path: Path) -> None:
    local, _img, points = local_repo_with_points(cli, tmp_path, 3, encrypt=False)
    cli.ok("init", "--repo", cloud_url)
    cli.ok("replicate", "--repo", local, "--to", cloud_url)
    other = Cli(s3_server, tmp_path / "other-cache")
    first, second = points[0][0], points[1][0]

    cli.ok("lock", "--repo", cloud_url, first, "--until", "2099-01-01")
    one_line_error(other.run("delete", "--repo", cloud_url, "--now", first), 1, "locked")
    pruned = other.json("prune", "--repo", cloud_url, "--volume", "web01-sda",
                        "--keep-last", "1")
    assert pruned["deleted"] == [second]
    assert [p["id"] for p in cli.json("points", "--repo", cloud_url)] == [
        first, points[2][0]]

    cli.ok("delete", "--repo", cloud_url, points[2][0])
    assert [p["id"] for p in other.json("points", "--repo", cloud_url, "--deleted")] == [
        second, points[2][0]]  # the pruned point is held too
    other.ok("undelete", "--repo", cloud_url, points[2][0])
    assert [p["id"] for p in cli.json("points", "--repo", cloud_url)] == [
        first, points[2][0]]
    # Replicating again sends nothing: the cloud holds the held point, and the pruned one
    # was removed there on purpose.
    assert cli.json("replicate", "--repo", local, "--to", cloud_url)["points"] == []

    # A forged mark (no key, no valid MAC) is refused, not obeyed.
    bucket = Bucket(s3_server, cloud_url)
    record = bucket.get_json(f"marks/{first}.json")
    bucket.put(f"marks/{first}.json", json.dumps({**record, "locked_until": None}).encode())
    one_line_error(other.run("points", "--repo", cloud_url), 1, "fails authentication")


def test_a_flagged_point_is_flagged_in_the_cloud_too(cli: Cli, cloud_url: str,
                                                     tmp_path: Path) -> None:
    """Detection runs where a point is made; its verdict travels with the point, so the
    cloud's own retention keeps the flagged point (the evidence, and the last clean one
    before it stays by its own rules) just as the local one does."""
    local, _img, points = local_repo_with_points(cli, tmp_path, 3, encrypt=False)
    suspect = points[1][0]
    with Repository.open(local) as repo:
        marks.flag(repo, repo.resolve(suspect), ["12 files renamed to the new extension .x"])
    cli.ok("init", "--repo", cloud_url)
    cli.ok("replicate", "--repo", local, "--to", cloud_url)
    listed = {p["id"]: p for p in cli.json("points", "--repo", cloud_url)}
    assert listed[suspect]["flagged"] is True
    assert listed[suspect]["flag_reasons"] == ["12 files renamed to the new extension .x"]
    assert listed[points[0][0]]["flagged"] is False
    pruned = cli.json("prune", "--repo", cloud_url, "--volume", "web01-sda", "--keep-last", "1")
    assert pruned["deleted"] == [points[0][0]]
    assert {"id": suspect, "rules": ["flagged"]} in pruned["kept"]
