"""Cloud repositories under a misbehaving bucket: real SeaweedFS behind `FaultyS3`.

No committed point is ever lost, a prune's lock is judged by the server's clock, and an
empty or partial listing never makes a sync forget a point.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cairn.errors import CairnError, Locked
from cairn.replication.replicate import replicate
from cairn.store.backends.s3 import S3Backend, open_s3_url
from cairn.store.catalog import RecoveryPoint
from cairn.store.cloud import init_cloud, open_cloud
from cairn.store.cloudlock import RemoteLock, _boot_id
from cairn.store.repository import Repository
from cairn.store.verify import verify
from tests.s3server import SeaweedS3
from tests.store.faulty_s3 import Faults, FaultyS3
from tests.store.helpers import backup, digest, make_image, mutate, restored_digest


@dataclass
class Site:
    url: str
    real: S3Backend
    local: Repository
    points: list[tuple[RecoveryPoint, str]]
    work: Path

    def faulty(self, faults: Faults, seed: int = 0) -> tuple[Repository, FaultyS3]:
        bucket = FaultyS3(open_s3_url(self.url), faults, seed)
        return open_cloud(self.url, None, bucket=bucket), bucket


@pytest.fixture
def site(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[Site]:
    for name, value in {**s3_server.cairn_env(tmp_path), "CAIRN_CLOUD_LOCK_SECONDS": "3"}.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.bucket}/faults-{uuid.uuid4().hex[:10]}"
    local = Repository.init(tmp_path / "local")
    img = tmp_path / "disk.img"
    data = make_image(img, 2 * 1024 * 1024, seed=5, fill=0.6)
    points = []
    for k in range(3):
        points.append((backup(local, "web01-sda", img), digest(data)))
        mutate(img, data, seed=90 + k, writes=4)
    init_cloud(url, None).close()
    try:
        yield Site(url, open_s3_url(url), local, points, tmp_path)
    finally:
        local.close()


def assert_whole(site: Site, expect: list[tuple[RecoveryPoint, str]]) -> None:
    """Through the plain bucket: every expected point is there, restores bit for bit, and
    verify --read-data is clean."""
    cloud = open_cloud(site.url, None)
    try:
        assert {p.id for p, _ in expect} <= {p.id for p in cloud.catalog.points()}
        for point, want in expect:
            got = restored_digest(cloud, cloud.catalog.point(point.id), site.work / "out.img")
            assert got == want, point.id
        assert verify(cloud, read_data=True).ok
    finally:
        cloud.close()


def plant_lock(site: Site, info: dict[str, object]) -> str:
    name = f"locks/{uuid.uuid4().hex[:16]}.json"
    site.real.put(name, json.dumps(info).encode())
    return name


def test_age_is_the_servers_not_the_writers_clock(site: Site) -> None:
    plant_lock(site, {"exclusive": True, "host": "elsewhere", "pid": 4242, "time": 0,
                      "command": "cairn prune"})
    with pytest.raises(Locked) as err:
        RemoteLock(site.real, True, site.url).acquire(wait=1)
    assert "pid 4242 on elsewhere" in str(err.value) and "held for" in str(err.value)


def test_lock_of_a_dead_process_on_this_host_is_taken_at_once(site: Site) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    planted = plant_lock(site, {"exclusive": True, "host": os.uname().nodename,
                                "boot": _boot_id(), "pid": gone.pid, "started": "1"})
    RemoteLock(site.real, True, site.url).acquire(wait=0).release()
    assert not site.real.exists(planted)


@pytest.mark.parametrize("listing", ["empty", "partial"])
def test_short_listing_never_makes_a_sync_forget_points(
        site: Site, listing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full sync takes a point as gone only once a HEAD says its record is: a listing
    that comes back empty or short leaves the cache whole."""
    cloud = open_cloud(site.url, None)
    replicate(site.local, cloud)
    cloud.close()
    monkeypatch.setenv("CAIRN_CLOUD_FULL_SYNC_SECONDS", "0")  # every sync lists in full
    faulty, _ = site.faulty(Faults(listing=listing), seed=7)
    try:
        assert {p.id for p in faulty.catalog.points()} == {p.id for p, _ in site.points}
    finally:
        faulty.close()
    assert_whole(site, site.points)


def test_put_that_lands_but_answers_an_error_loses_nothing(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_CLOUD_PACK_BYTES", str(128 * 1024))  # many PUTs to fail
    # The first PUTs fail after landing whatever order the threads take, so the case is
    # always tested; the rate adds more at random.
    faults = Faults(land_then_fail_first=3, land_then_fail_rate=0.04, error_rate=0.01)
    for attempt in range(60):
        try:
            cloud, _ = site.faulty(faults, seed=attempt)
        except CairnError:
            continue
        try:
            replicate(site.local, cloud)
            break
        except CairnError:
            continue
        finally:
            cloud.close()
    else:
        raise AssertionError("replication never got through 5% failures")
    assert faults.injected.get("landed", 0) >= 3
    assert_whole(site, site.points)


def test_flipped_or_truncated_reads_are_caught_not_restored(site: Site) -> None:
    cloud = open_cloud(site.url, None)
    replicate(site.local, cloud)
    cloud.close()
    for faults in (Faults(flip_rate=1.0), Faults(truncate_rate=1.0)):
        faulty, _ = site.faulty(Faults())
        faulty.remote.backend.faults = faults  # type: ignore[union-attr]
        try:
            point, _ = site.points[-1]
            with pytest.raises(CairnError):
                restored_digest(faulty, faulty.catalog.point(point.id), site.work / "bad.img")
        finally:
            faulty.close()
    assert_whole(site, site.points)
