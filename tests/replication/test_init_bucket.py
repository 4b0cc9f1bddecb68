"""`cairn init` on S3: a missing bucket is created; someone else's data is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cairn.errors import S3Unreachable
from cairn.store.backends.s3_bucket import Credentials, versioning_enabled
from tests.replication.test_replicate import Cli
from tests.s3server import SeaweedS3
from tests.store.helpers import make_image


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


def test_whether_a_bucket_keeps_versions_is_asked_without_loading_httpx(
        s3_server: SeaweedS3, tmp_path: Path) -> None:
    """Every replication asks; httpx and its TLS context cost more than the request, so only
    a versioned bucket loads them (`s3_bucket`). A replication to a plain bucket loads none."""
    cli = Cli(s3_server, tmp_path / "cache")
    client = s3_server.client()
    versioned = "ver-" + os.urandom(4).hex()
    client.create_bucket(Bucket=versioned)
    client.put_bucket_versioning(Bucket=versioned,
                                 VersioningConfiguration={"Status": "Enabled"})
    ask = ("import sys; from cairn.store.backends.s3_bucket import Credentials, "
           "versioning_enabled as v; c = Credentials(*sys.argv[2:5]); "
           "print(v(sys.argv[1], sys.argv[5], c), 'httpx' in sys.modules)")
    for bucket, answer in ((s3_server.bucket, "False False"), (versioned, "True False")):
        got = subprocess.run([sys.executable, "-c", ask, s3_server.endpoint,
                              s3_server.access_key, s3_server.secret_key, "us-east-1", bucket],
                             capture_output=True, text=True, check=True)
        assert got.stdout.split() == answer.split(), got.stderr
    with pytest.raises(S3Unreachable, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9"):
        versioning_enabled("http://127.0.0.1:9", "any", Credentials("a", "b", "us-east-1"))

    local, url = tmp_path / "local", f"s3://{s3_server.bucket}/plain-{os.urandom(3).hex()}"
    cli.ok("init", "--repo", local)
    image = tmp_path / "disk.img"
    make_image(image, 1024 * 1024, seed=3, fill=0.5)
    cli.ok("backup", "--repo", local, "--volume", "v", image)
    cli.ok("init", "--repo", url)
    replicate = ("import sys; from cairn.cli import main; sys.argv[0] = 'cairn'\n"
                 "try:\n    main()\nexcept SystemExit:\n    pass\n"
                 "print('httpx loaded' if 'httpx' in sys.modules else 'no httpx')")
    got = subprocess.run([sys.executable, "-c", replicate, "replicate", "--repo", str(local),
                          "--to", url], capture_output=True, text=True, env=cli.env, check=True)
    assert "replicated 1 point(s)" in got.stdout and got.stdout.endswith("no httpx\n"), got
