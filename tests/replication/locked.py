"""What the Object Lock tests of convert and prune share: the bucket's versions and locks
read with the server's own client, its clock, and a fresh node restoring every point."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cairn.replication.replicate import replicate
from cairn.store.cloud import init_cloud, open_cloud
from cairn.store.delete import delete_points
from cairn.store.repository import Repository
from cairn.store.verify import verify
from tests.appliance.harness import wait_for
from tests.s3server import SeaweedS3
from tests.store.helpers import backup, digest, make_image, mutate, restored_digest


@dataclass(frozen=True)
class LockedBucket:
    s3: Any
    """the server's own client, which reads versions and locks cairn does not show"""
    name: str
    env: dict[str, str]
    """cairn's settings for the server (a CLI run needs them too)"""

    @property
    def url(self) -> str:
        """The repository, under the prefix ``r/`` that the tests' keys name."""
        return f"s3://{self.name}/r"


def locked_bucket(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  kind: str, settings: dict[str, str]) -> LockedBucket:
    """A new bucket with Object Lock, and cairn's settings for it (the server's, then
    ``settings``) set for this test."""
    name = f"{kind}-locked-{uuid.uuid4().hex[:8]}"
    s3 = s3_server.client()
    s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    env = {**s3_server.cairn_env(tmp_path), **settings}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return LockedBucket(s3, name, env)


def pack_keys(pack: str) -> list[str]:
    """A pack's object and its index object, under the prefix ``r/``."""
    return [f"r/packs/{pack[-2:]}/{pack}", f"r/index/{pack}"]


GRACE = 1.0
"""seconds of the prune's grace period in these tests (`CAIRN_CLOUD_LOCK_SECONDS`)"""


def two_points_deleted(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                       kind: str, seed: int) -> tuple[LockedBucket, dict[str, str]]:
    """A locked bucket (small packs, a short grace) with three points of one volume, each
    replicated on its own (packs of their own), the older two deleted with no prune yet
    (each test runs its own), and the grace passed: the bucket, and the digest of the point
    left by its id."""
    site = locked_bucket(s3_server, tmp_path, monkeypatch, kind, {
        "CAIRN_CLOUD_PACK_BYTES": str(96 << 10), "CAIRN_CLOUD_LOCK_SECONDS": str(GRACE)})
    image = tmp_path / "disk.img"
    data = make_image(image, 1024 * 1024, seed=seed, fill=0.7)
    want = {}
    with Repository.init(tmp_path / "local") as local, init_cloud(site.url, None) as cloud:
        for step in range(3):
            mutate(image, data, seed=step, writes=12)
            want[backup(local, "web01-sda", image).id] = digest(data)
            replicate(local, cloud)
        old = sorted(cloud.catalog.points(), key=lambda p: p.created)[:-1]
        delete_points(cloud, old)
    for point in old:
        del want[point.id]
    grace_passes(site)
    return site, want


def grace_passes(site: LockedBucket, since: float | None = None) -> None:
    """Wait until the grace period has passed on the server's clock since ``since`` (now)."""
    start = server_time(site.s3, site.name) if since is None else since
    wait_for(lambda: server_time(site.s3, site.name) > start + GRACE + 1, 30, 0.25)


def versions(s3: Any, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    """The keys of every version under ``prefix``, and of every delete marker."""
    listing = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return ([v["Key"] for v in listing.get("Versions", [])],
            [m["Key"] for m in listing.get("DeleteMarkers", [])])


def locked_until(s3: Any, bucket: str, key: str) -> float:
    held = s3.get_object_retention(Bucket=bucket, Key=key)["Retention"]
    return float(held["RetainUntilDate"].timestamp())


def server_time(s3: Any, bucket: str) -> float:
    """The server's clock, which decides when a lock has passed (not this machine's)."""
    s3.put_object(Bucket=bucket, Key="clock", Body=b"")
    return float(s3.head_object(Bucket=bucket, Key="clock")["LastModified"].timestamp())


def restores_whole(url: str, want: dict[str, str], cache: Path, *, check: bool = False) -> None:
    """A node with its own cache at ``cache`` lists exactly the points of ``want`` and
    restores each to its digest (and, with ``check``, verifies every chunk's data)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CAIRN_CACHE", str(cache))
        with open_cloud(url, None) as reader:
            for point in reader.catalog.points():
                assert restored_digest(reader, point, cache.with_suffix(".img")) == \
                    want[point.id]
            if check:
                assert verify(reader, read_data=True).ok
