"""`cairn init` on S3: a missing bucket is created; someone else's data is refused."""

from __future__ import annotations

import os
from pathlib import Path

from tests.replication.test_replicate import Cli
from tests.s3server import SeaweedS3


def test_init_creates_a_missing_bucket_and_refuses_foreign_data(
        s3_server: SeaweedS3, tmp_path: Path) -> None:
    cli = Cli(s3_server, tmp_path / "cache")
    cli.env["CAIRN_KEYS"] = str(tmp_path / "keys")
    bucket = "new-" + os.urandom(4).hex()
    client = s3_server.client()
    assert bucket not in [b["Name"] for b in client.list_buckets()["Buckets"]]
    out = cli.ok("init", "--repo", f"s3://{bucket}/offsite", "--endpoint", s3_server.endpoint)
    assert "created cairn cloud repository" in out
    assert bucket in [b["Name"] for b in client.list_buckets()["Buckets"]]
    assert cli.json("points", "--repo", f"s3://{bucket}/offsite") == []
    again = cli.run("init", "--repo", f"s3://{bucket}/offsite")
    assert again.returncode != 0 and "already holds a cairn repository" in again.stderr

    client.put_object(Bucket=bucket, Key="photos/cat.jpg", Body=b"not a repository")
    foreign = cli.run("init", "--repo", f"s3://{bucket}/photos")
    assert foreign.returncode == 2 and "not empty and holds no cairn repository" in (
        foreign.stderr)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket,
                                                      Prefix="photos/")["Contents"]]
    assert keys == ["photos/cat.jpg"]  # nothing was written
    # A new prefix in the same bucket is fine.
    cli.ok("init", "--repo", f"s3://{bucket}/second")
