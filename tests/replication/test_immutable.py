"""Immutable cloud points on a real SeaweedFS bucket with Object Lock: every object a point
needs is locked (COMPLIANCE) so even the bucket's own credentials cannot delete it, locks
are extended once per generation rather than once per backup, and a bucket that cannot
lock is refused before anything is sent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cairn.ops.offsite import make_immutable
from cairn.ops.retention import prune as retention_prune
from cairn.replication.replicate import replicate
from cairn.store import marks
from cairn.store.blockmap import diff
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO, chunk_name
from cairn.store.cloud import Cloud, init_cloud
from cairn.store.cloud_packs import index_object, pack_object
from cairn.store.immutable import Immutability
from cairn.store.machine_points import MachinePoints
from cairn.store.repository import Repository
from cairn.store.retention import Policy
from tests.appliance.harness import wait_for
from tests.cli.test_cli import one_line_error
from tests.replication.test_replicate import Cli, local_repo_with_points
from tests.s3server import SeaweedS3
from tests.store.helpers import backup, make_image, mutate

DAY = 86400


def locked_bucket(server: SeaweedS3, name: str) -> str:
    server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def objects(server: SeaweedS3, bucket: str, prefix: str) -> list[str]:
    listing = server.client().list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    return [o["Key"] for o in listing.get("Contents", [])]


def retention(server: SeaweedS3, bucket: str, key: str) -> dict[str, Any]:
    return dict(server.client().get_object_retention(Bucket=bucket, Key=key)["Retention"])


def test_immutable_points_cannot_be_deleted_even_with_the_buckets_keys(
        cli: Cli, s3_server: SeaweedS3, tmp_path: Path) -> None:
    bucket = locked_bucket(s3_server, "immutable-cli")
    url = f"s3://{bucket}/r"
    local, _img, points = local_repo_with_points(cli, tmp_path, 3, encrypt=False)
    cli.ok("init", "--repo", url)
    first = cli.run("replicate", "--repo", local, "--to", url, "--immutable", "1d", "--json")
    assert first.returncode == 0, first.stderr
    sent = json.loads(first.stdout)
    # SeaweedFS stores the lifecycle rule but expires versions only when its lifecycle
    # worker runs: cairn says so rather than promising old versions go.
    assert "expires old versions only when its lifecycle worker runs" in first.stderr
    assert len(sent["points"]) == 3
    assert sent["locked_until"] >= time.time() + DAY
    assert sent["lock_requests"] == 1  # config.json; every pack and record went up locked

    keys = [k for k in objects(s3_server, bucket, "r")
            if k.split("/")[1] in ("config.json", "points", "packs", "index", "marks")]
    assert len(keys) > 10
    for key in keys:
        held = retention(s3_server, bucket, key)
        assert held["Mode"] == "COMPLIANCE"
        assert held["RetainUntilDate"].timestamp() >= time.time() + DAY - 60, key
    s3 = s3_server.client()
    rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert [r["NoncurrentVersionExpiration"]["NoncurrentDays"] for r in rules] == [1]
    chunk = next(k for k in keys if "/packs/" in k)
    for key in (f"r/points/web01-sda/{points[0][0]}.json", chunk):
        version = s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"][0]["VersionId"]
        with pytest.raises(Exception, match="AccessDenied"):
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version)

    listed = cli.json("points", "--repo", url)
    assert [p["id"] for p in listed] == [p for p, _ in points]
    assert all(p["locked_until"] == sent["locked_until"] for p in listed)
    one_line_error(cli.run("delete", "--repo", url, "--now", points[0][0]), 1, "locked until")
    pruned = cli.json("prune", "--repo", url, "--volume", "web01-sda", "--keep-last", "1")
    assert pruned["deleted"] == []

    again = cli.json("replicate", "--repo", local, "--to", url, "--immutable", "1d")
    assert again["points"] == [] and again["lock_requests"] == 0

    # With the bucket's own keys an intruder "deletes" a point: S3 only hides it behind a
    # delete marker. Reading commands read past the marker, the point is whole, and they
    # write nothing to the bucket: its listing of versions and markers is unchanged.
    record = f"r/points/web01-sda/{points[1][0]}.json"
    s3.delete_object(Bucket=bucket, Key=record)
    s3.delete_object(Bucket=bucket, Key=f"r/marks/{points[1][0]}.json")
    before = bucket_state(s3_server, bucket)
    assert [p["id"] for p in cli.json("points", "--repo", url)] == [p for p, _ in points]
    out = tmp_path / "restored.img"
    cli.ok("restore", "--repo", url, points[1][0], out)
    assert out.read_bytes() == points[1][1]
    assert bucket_state(s3_server, bucket) == before

    # A node with an empty cache finds what the intruder hid (record, marks, a pack): the
    # point is there with cairn's lock, verify finds nothing missing, still writing nothing.
    victim = points[2][0]
    for key in (f"r/points/web01-sda/{victim}.json", f"r/marks/{victim}.json", chunk):
        s3.delete_object(Bucket=bucket, Key=key)
    before = bucket_state(s3_server, bucket)
    fresh = Cli(s3_server, tmp_path / "fresh-cache")
    listed = fresh.json("points", "--repo", url)
    assert [p["id"] for p in listed] == [p for p, _ in points]
    assert all(p["locked_until"] == sent["locked_until"] for p in listed)
    assert "no problems found" in fresh.ok("verify", "--repo", url)
    one_line_error(fresh.run("delete", "--repo", url, "--now", victim), 1, "locked until")
    assert bucket_state(s3_server, bucket) == before

    # Repair is asked for (or done by the next delete or prune): the markers go.
    assert len(fresh.json("verify", "--repo", url, "--repair")["unhidden"]) == 5
    for key in (record, f"r/points/web01-sda/{victim}.json", chunk):
        s3.head_object(Bucket=bucket, Key=key)


def bucket_state(server: SeaweedS3, bucket: str) -> list[tuple[str, ...]]:
    """Every version and delete marker in the bucket, with its date, size and ETag: what a
    reading command must not change."""
    listing = server.client().list_object_versions(Bucket=bucket)
    entries = [("version", v["Key"], v["VersionId"], str(v["IsLatest"]),
                str(v["LastModified"]), str(v["Size"]), v["ETag"])
               for v in listing.get("Versions", [])]
    entries += [("marker", m["Key"], m["VersionId"], str(m["IsLatest"]),
                 str(m["LastModified"]))
                for m in listing.get("DeleteMarkers", [])]
    assert not listing.get("IsTruncated")
    return sorted(entries)


def test_a_bucket_that_cannot_lock_is_refused_before_anything_is_sent(
        cli: Cli, cloud_url: str, tmp_path: Path) -> None:
    local, _img, _points = local_repo_with_points(cli, tmp_path, 1, encrypt=False)
    cli.ok("init", "--repo", cloud_url)
    one_line_error(cli.run("replicate", "--repo", local, "--to", cloud_url, "--immutable", "30d"),
                   2, "cannot hold immutable points")
    assert cli.json("points", "--repo", cloud_url) == []


@pytest.fixture
def s3_env(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[None]:
    for name, value in s3_server.cairn_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    yield


def needed(repo: Repository, point: RecoveryPoint) -> set[str]:
    """Every chunk a point's block map reaches (interior nodes and data chunks)."""
    return {chunk_name(h) for _slot, _a, h in diff(repo.nodes, None, repo.tree(point))
            if h is not None and h != ZERO}


def test_locks_are_extended_once_per_generation_not_once_per_backup(
        s3_server: SeaweedS3, s3_env: None, tmp_path: Path) -> None:
    """Backups replayed on a clock: within a generation a backup extends nothing; the first
    backup of the next generation extends each object its point needs once, to the new
    horizon, and S3 holds exactly that date."""
    bucket = locked_bucket(s3_server, "immutable-generations")
    now = [(time.time() // DAY + 1.5) * DAY]  # half way through tomorrow's generation
    policy = Immutability(DAY, clock=lambda: now[0])
    img = tmp_path / "disk.img"
    data = make_image(img, 2 * 1024 * 1024, seed=3, fill=0.8)
    with Repository.init(tmp_path / "local") as local, \
            init_cloud(f"s3://{bucket}/g", None) as cloud:
        make_immutable(cloud, DAY)  # probes the bucket first
        assert isinstance(cloud.remote, Cloud)
        remote = cloud.remote
        remote.immutable(cloud, policy)  # the same locks, on the replayed clock

        def one_backup(hours: float) -> tuple[RecoveryPoint, int, set[str]]:
            """The point, the extensions its replication made, the objects it sent."""
            now[0] += hours * 3600
            mutate(img, data, seed=int(now[0] // 3600), writes=2)  # new data every time
            point = backup(local, "v", img)
            assert remote.locker is not None and remote.packs is not None
            before = remote.locker.retention.extensions
            packs = set(remote.packs.pack_ids())
            replicate(local, cloud)
            sent = {name for pack in set(remote.packs.pack_ids()) - packs
                    for name in (pack_object(pack), index_object(pack))}
            return point, remote.locker.retention.extensions - before, sent

        assert one_backup(0)[1] == 1  # config.json, locked for the first time
        for _ in range(5):  # the rest of the generation: nothing to extend
            assert one_backup(1)[1] == 0
        point, extended, sent = one_backup(12)  # the next generation
        assert remote.packs is not None
        need = set(remote.packs.objects(sorted(needed(cloud, point))))  # packs and indexes
        assert sent and all(n.startswith(("packs/", "index/")) for n in need)
        assert extended == len(need - sent) + 1  # each object not sent locked, once
        for _ in range(3):
            assert one_backup(1)[1] == 0
        horizon = policy.horizon(now[0])
        for name in need:
            until = retention(s3_server, bucket, f"g/{name}")["RetainUntilDate"].timestamp()
            assert until >= horizon - 1, name
        assert marks.marks_of(cloud, point.id).locked_until == horizon


def test_once_its_lock_passes_prune_frees_a_point_for_good(
        s3_server: SeaweedS3, s3_env: None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A DELETE in a versioned bucket only hides an object: cairn's deletes also delete its
    versions once their lock has passed, so nothing is left behind (a lock of two seconds
    here; the point is kept while it holds)."""
    monkeypatch.setenv("CAIRN_DELETE_WINDOW", "0s")
    bucket = locked_bucket(s3_server, "immutable-expiry")
    img = tmp_path / "disk.img"
    data = make_image(img, 1024 * 1024, seed=9, fill=0.9)
    with Repository.init(tmp_path / "local") as local, \
            init_cloud(f"s3://{bucket}/x", None) as cloud:
        assert isinstance(cloud.remote, Cloud)
        cloud.remote.immutable(cloud, Immutability(2.0))
        first = backup(local, "v", img)
        mutate(img, data, seed=1, writes=4)
        backup(local, "v", img)
        replicate(local, cloud)
        until = marks.marks_of(cloud, first.id).locked_until
        assert until is not None
        assert retention_prune(cloud, "v", Policy(last=1)).deleted == []  # locked: kept
        wait_for(lambda: time.time() > until + 1, timeout=30, every=0.2)
        assert retention_prune(cloud, "v", Policy(last=1)).deleted == [first.id]
        assert [p.id for p in cloud.catalog.points()] != [] and cloud.catalog.point(
            first.id) is None
    s3 = s3_server.client()
    listing = s3.list_object_versions(Bucket=bucket, Prefix="x/")
    current = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="x/")["Contents"]}
    assert sorted(v["Key"] for v in listing.get("Versions", [])) == sorted(current)
    assert listing.get("DeleteMarkers", []) == []
    assert f"x/points/v/{first.id}.json" not in current


def test_a_machine_points_record_is_locked_as_long_as_its_disks_points(
        s3_server: SeaweedS3, s3_env: None, tmp_path: Path) -> None:
    """The grouping of a machine's disks is under Object Lock with their point records, so
    the bucket's own keys cannot remove it: a DELETE only hides it, every node still lists
    the machine point, and `verify --repair` brings the record back."""
    bucket = locked_bucket(s3_server, "immutable-machines")
    url = f"s3://{bucket}/m"
    group = "0123456789abcdef"
    with Repository.init(tmp_path / "local") as local, init_cloud(url, None) as cloud:
        disks = []
        for n, disk in enumerate(("vda", "vdb")):
            make_image(tmp_path / f"{disk}.img", 512 * 1024, seed=70 + n)
            disks.append((disk, backup(local, f"web01-{disk}", tmp_path / f"{disk}.img")))
        MachinePoints(local.catalog).record(group, "web01", disks[0][1].created, "crash", "",
                                            disks)
        make_immutable(cloud, DAY)
        assert replicate(local, cloud).machine_points == [group]
    record = f"m/machines/web01/{group}.json"
    held = retention(s3_server, bucket, record)
    assert held["Mode"] == "COMPLIANCE"
    assert held == retention(s3_server, bucket, f"m/points/web01-vda/{disks[0][1].id}.json")
    s3 = s3_server.client()
    version = s3.list_object_versions(Bucket=bucket, Prefix=record)["Versions"][0]["VersionId"]
    with pytest.raises(Exception, match="AccessDenied"):
        s3.delete_object(Bucket=bucket, Key=record, VersionId=version)

    s3.delete_object(Bucket=bucket, Key=record)  # only a delete marker over the locked version
    fresh = Cli(s3_server, tmp_path / "fresh-cache")
    listed = fresh.json("points", "--repo", url, "--machine", "web01")
    assert [mp["id"] for mp in listed] == [group]  # type: ignore[index, union-attr]
    assert record not in objects(s3_server, bucket, "m/machines/web01")
    fresh.ok("verify", "--repo", url, "--repair")
    assert record in objects(s3_server, bucket, "m/machines/web01")
