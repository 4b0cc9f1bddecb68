"""Locks and deletion holds on a cloud repository are in the bucket: every node obeys them."""

from __future__ import annotations

import json
from pathlib import Path

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
