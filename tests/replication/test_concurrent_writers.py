"""Many writers into one cloud repository at once, with no lock: real `cairn` processes.

Three appliances (their own local repositories and caches, disks that share much of their
data) replicate into one SeaweedFS repository at the same moment, while a fourth node
deletes a point there. Every run succeeds, no lock object is ever written, and afterwards a
node with an empty cache finds exactly the points published and not deleted, each restoring
bit for bit, with `verify --read-data` clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cairn.replication.replicate import replicate
from cairn.store import cloud_prune
from cairn.store.backends.s3 import open_s3_url
from cairn.store.cloud import Cloud, init_cloud, open_cloud
from cairn.store.repository import Repository
from cairn.store.verify import verify
from tests.s3server import SeaweedS3
from tests.store.helpers import backup, digest, make_image, mutate, restored_digest

ROOT = Path(__file__).resolve().parents[2]
APPLIANCES = 3


def _appliance(work: Path, n: int) -> tuple[Path, list[tuple[str, str]]]:
    """A local repository with two points of one disk; the disks of all appliances start
    from one image, so they share chunks (two writers may send the same chunk at once)."""
    img = work / f"disk{n}.img"
    data = make_image(img, 1024 * 1024, seed=7, fill=0.7)
    mutate(img, data, seed=100 + n, writes=3)
    points = []
    with Repository.init(work / f"local{n}") as repo:
        for k in range(2):
            points.append((backup(repo, f"app{n}-sda", img).id, digest(data)))
            mutate(img, data, seed=200 + 10 * n + k, writes=3)
    return work / f"local{n}", points


@pytest.fixture
def env(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> dict[str, str]:
    """The server's settings, in this process and for the `cairn` processes started."""
    env = {**os.environ, "CAIRN_S3_ENDPOINT": s3_server.endpoint,
           "CAIRN_S3_ACCESS_KEY": s3_server.access_key,
           "CAIRN_S3_SECRET_KEY": s3_server.secret_key, "CAIRN_KEYS": str(tmp_path / "keys")}
    for name in ("CAIRN_S3_ENDPOINT", "CAIRN_S3_ACCESS_KEY", "CAIRN_S3_SECRET_KEY",
                 "CAIRN_KEYS"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("CAIRN_CACHE", str(tmp_path / "cache-setup"))
    return env


def test_replications_and_a_delete_at_once_need_no_lock(
        s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        env: dict[str, str]) -> None:
    url = f"s3://{s3_server.bucket}/many-{uuid.uuid4().hex[:10]}"
    appliances = [_appliance(tmp_path, n) for n in range(APPLIANCES)]
    with init_cloud(url, None) as cloud, Repository.open(appliances[0][0]) as first:
        replicate(first, cloud)  # one point there already, for the delete below
    doomed = appliances[0][1][0][0]

    def cairn(node: str, *args: str | Path) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "cairn", *map(str, args)], cwd=ROOT,
                                env={**env, "CAIRN_CACHE": str(tmp_path / f"cache-{node}")},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    runs = [cairn(f"app{n}", "replicate", "--repo", local, "--to", url)
            for n, (local, _points) in enumerate(appliances)]
    runs.append(cairn("admin", "delete", "--repo", url, "--now", doomed))
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, (run.args, out, err)

    assert list(open_s3_url(url).list("locks")) == []
    monkeypatch.setenv("CAIRN_CACHE", str(tmp_path / "cache-fresh"))
    want = {p: d for _local, points in appliances for p, d in points if p != doomed}
    with open_cloud(url, None) as cloud:
        assert {p.id for p in cloud.catalog.points()} == set(want)
        for point_id, expected in want.items():
            point = cloud.catalog.point(point_id)
            assert point is not None
            assert restored_digest(cloud, point, tmp_path / "out.img") == expected
        assert verify(cloud, read_data=True).ok


def test_a_chunk_only_in_condemned_packs_is_sent_again(
        s3_server: SeaweedS3, tmp_path: Path, env: dict[str, str]) -> None:
    """A writer relies on no pack a prune condemned: the disk backed up again under a new
    volume is all in the bucket already, and costs nothing, until its packs are condemned;
    then every chunk goes again (the prune may delete those packs before the point is
    published, its grace counted from the notice)."""
    img = tmp_path / "disk.img"
    make_image(img, 1024 * 1024, seed=9, fill=0.7)
    url = f"s3://{s3_server.bucket}/condemned-{uuid.uuid4().hex[:10]}"
    with Repository.init(tmp_path / "local") as local, init_cloud(url, None) as cloud:
        backup(local, "a-sda", img)
        first = replicate(local, cloud)
        backup(local, "b-sda", img)
        assert replicate(local, cloud).chunks_sent == 0
        assert isinstance(cloud.remote, Cloud) and cloud.remote.packs is not None
        for pack in cloud.remote.packs.pack_ids():
            cloud.remote.backend.put(f"{cloud_prune.CONDEMNED}/{pack}", b"")
        backup(local, "c-sda", img)
        again = replicate(local, cloud)
    assert first.chunks_sent > 10 and again.chunks_sent == first.chunks_sent
