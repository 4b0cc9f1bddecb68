"""Locks and deletion holds on a cloud repository are in the bucket: every node obeys them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cairn.store import marks
from cairn.store.cloud_feed import new_key
from cairn.store.repository import Repository
from tests.appliance.harness import wait_for
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
    # Not announced in the feed, only a full sync reads it; announced, the next sync does.
    assert len(other.json("points", "--repo", cloud_url)) == 2
    full = Cli(s3_server, tmp_path / "other-cache")
    full.env["CAIRN_CLOUD_FULL_SYNC_SECONDS"] = "0"
    one_line_error(full.run("points", "--repo", cloud_url), 1, "fails authentication")
    bucket.put(f"feed/{new_key(time.time())}.put~marks~{first}.json", b"")
    one_line_error(cli.run("points", "--repo", cloud_url), 1, "fails authentication")


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


def test_an_older_marks_record_put_back_weakens_nothing(cli: Cli, s3_server: SeaweedS3,
                                                        tmp_path: Path) -> None:
    """With the bucket's own keys, an older sealed version of a point's marks is put back
    as the current one (versioning keeps them all; its MAC is cairn's own). Its lock, since
    expired, must not replace the later one, nor may its lack of a flag drop the flag:
    not on the node that saw the later record, nor on one with an empty cache."""
    s3 = s3_server.client()
    s3.create_bucket(Bucket="marks-replay", ObjectLockEnabledForBucket=True)
    url = "s3://marks-replay/r"
    local, _img, points = local_repo_with_points(cli, tmp_path, 2, encrypt=False)
    victim = points[0][0]
    with Repository.open(local) as repo:
        marks.flag(repo, repo.resolve(victim), ["12 files renamed to the new extension .x"])
    cli.ok("init", "--repo", url)
    sent = cli.json("replicate", "--repo", local, "--to", url, "--immutable", "2s")
    key = f"r/marks/{victim}.json"
    # The first record: the 2-second lock of the replication, before the flag was added.
    [first] = [v for v in s3.list_object_versions(Bucket="marks-replay", Prefix=key)["Versions"]
               if json.loads(s3.get_object(Bucket="marks-replay", Key=key, VersionId=v[
                   "VersionId"])["Body"].read())["flags"] == []]
    cli.ok("lock", "--repo", url, victim, "--until", "30d")
    held = {p["id"]: p for p in cli.json("points", "--repo", url)}[victim]
    assert held["locked_until"] > time.time() + 29 * 86400 and held["flagged"] is True
    wait_for(lambda: time.time() > sent["locked_until"] + 1, timeout=30, every=0.2)

    s3.copy_object(Bucket="marks-replay", Key=key, CopySource={
        "Bucket": "marks-replay", "Key": key, "VersionId": first["VersionId"]})
    replayed = json.loads(s3.get_object(Bucket="marks-replay", Key=key)["Body"].read())
    assert replayed["flags"] == [] and replayed["locked_until"] < time.time()

    for node in (cli, Cli(s3_server, tmp_path / "fresh-cache")):
        listed = {p["id"]: p for p in node.json("points", "--repo", url)}
        assert listed[victim]["locked_until"] == held["locked_until"]
        assert listed[victim]["flag_reasons"] == held["flag_reasons"]
        one_line_error(node.run("delete", "--repo", url, "--now", victim), 1, "locked until")
        pruned = node.json("prune", "--repo", url, "--volume", "web01-sda", "--keep-last", "1")
        assert victim not in pruned["deleted"]
        assert [p["id"] for p in node.json("points", "--repo", url)] == [p for p, _ in points]


def test_a_deletion_hold_put_back_after_undelete_is_ignored(cli: Cli, cloud_url: str,
                                                            s3_server: SeaweedS3,
                                                            tmp_path: Path) -> None:
    """The hold record of a point that was deleted and then undeleted, saved and put back
    with the bucket's keys, must not hide the point again (to be reclaimed when the window
    ends): the node that saw the undelete keeps the newer record."""
    local, _img, points = local_repo_with_points(cli, tmp_path, 2, encrypt=False)
    cli.ok("init", "--repo", cloud_url)
    cli.ok("replicate", "--repo", local, "--to", cloud_url)
    victim = points[0][0]
    bucket = Bucket(s3_server, cloud_url)
    cli.ok("delete", "--repo", cloud_url, victim)
    hold = bucket.get_json(f"marks/{victim}.json")
    assert hold["deleted_at"] is not None
    cli.ok("undelete", "--repo", cloud_url, victim)
    bucket.put(f"marks/{victim}.json", json.dumps(hold).encode())
    assert [p["id"] for p in cli.json("points", "--repo", cloud_url)] == [p for p, _ in points]
    assert cli.json("points", "--repo", cloud_url, "--deleted") == []
