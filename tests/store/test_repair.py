"""verify --repair-from heals damage from the other copy, both ways, on a real SeaweedFS.

A local repository is replicated to a bucket; then a pack is deleted and a chunk flipped
locally, and repair fetches good chunks from the cloud (each hash-checked); then chunks
are damaged in their pack in the bucket and repair fetches them from the local repository
into a new pack, whose copies are read from then on. Every point
restores bit for bit from both afterwards.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cairn.store.cloud import Cloud, open_cloud
from cairn.store.cloud_packs import pack_object
from cairn.store.repository import Repository
from tests.replication.test_replicate import Cli, local_repo_with_points
from tests.s3server import SeaweedS3
from tests.store.helpers import flip_bit, pack_of


@pytest.fixture
def cli(s3_server: SeaweedS3, tmp_path: Path) -> Cli:
    return Cli(s3_server, tmp_path / "cache")


def _restores(cli: Cli, repo: str | Path, key: Path, points: list[tuple[str, bytes]],
              out: Path) -> None:
    for point, data in points:
        cli.ok("restore", "--repo", repo, "--key-file", key, point, out, "--force")
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_repair_heals_each_copy_from_the_other(cli: Cli, s3_server: SeaweedS3, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    local, _img, points = local_repo_with_points(cli, tmp_path, 2)
    key = local / "key"
    cloud = f"s3://{s3_server.bucket}/repair{abs(hash(str(tmp_path))) % 10**8}"
    cli.ok("init", "--repo", cloud, "--key-file", key)
    cli.ok("replicate", "--repo", local, "--to", cloud)

    repo = Repository.open(local)
    first = repo.resolve(points[0][0])
    chunks = [h for _, h in repo.nodes.leaves(repo.tree(first), 0, 8) if any(h)]
    flip_bit(repo, chunks[-1])
    pack = pack_of(repo, chunks[0])
    repo.close()
    pack.unlink()
    assert cli.run("verify", "--repo", local, "--read-data").returncode == 1
    out = cli.ok("verify", "--repo", local, "--read-data", "--repair-from", cloud,
                 "--key-file", key)
    assert "no problems found" in out and "repaired" in out and points[0][0] in out
    _restores(cli, local, key, points, tmp_path / "out.img")

    for name, value in cli.env.items():  # this process reaches the bucket as the CLI does
        if name.startswith("CAIRN_"):
            monkeypatch.setenv(name, value)
    bucket_repo = open_cloud(cloud, s3_server.endpoint, key)
    assert isinstance(bucket_repo.remote, Cloud) and bucket_repo.remote.packs is not None
    bucket = bucket_repo.remote.backend
    for digest, (pack, offset, length) in bucket_repo.remote.packs.locations(
            chunks[1:3]).items():  # two chunks overwritten in their pack, as a bad disk would
        body = bytearray(bucket.get(pack_object(pack), 1 << 30))
        body[offset : offset + length] = digest[:1] * length
        bucket.put(pack_object(pack), bytes(body))
    bucket_repo.close()
    assert cli.run("verify", "--repo", cloud, "--key-file", key, "--read-data").returncode == 1
    out = cli.ok("verify", "--repo", cloud, "--key-file", key, "--read-data",
                 "--repair-from", local)
    assert "no problems found" in out and "repaired 2 chunk(s)" in out
    _restores(cli, cloud, key, points, tmp_path / "out.img")
