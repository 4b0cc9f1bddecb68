"""The README's offsite block, exactly as written: `init` remembers the cloud repository's
endpoint (and region, addressing) in this node's profile, so `replicate`, `points`, `prune`
and `restore` on ``s3://`` need no ``--endpoint`` (and no ``CAIRN_S3_ENDPOINT``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.cli.test_repository_access import batch
from tests.s3server import SeaweedS3
from tests.store.helpers import make_image


def test_readme_offsite_commands_work_as_written(s3_server: SeaweedS3, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("CAIRN_S3_ENDPOINT", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")}
    env.update(CAIRN_S3_ACCESS_KEY=s3_server.access_key,
               CAIRN_S3_SECRET_KEY=s3_server.secret_key, CAIRN_CACHE=str(tmp_path / "cache"),
               CAIRN_KEYS=str(tmp_path / "config" / "keys"))
    local, key = tmp_path / "cairn", tmp_path / "cairn" / "key"
    cloud = f"s3://offsite-{os.getpid()}/acme"
    image, out = tmp_path / "web01.img", tmp_path / "restored.img"
    make_image(image, 1024 * 1024, seed=3)
    results = batch([
        ["init", "--repo", local, "--encrypt"],
        ["init", "--repo", cloud, "--endpoint", s3_server.endpoint, "--key-file", key],
        ["backup", "--repo", local, "--volume", "web01-sda", image],
        ["replicate", "--repo", local, "--to", cloud, "--bandwidth", "50M"],
        ["points", "--repo", cloud, "--key-file", key, "--json"],
        ["prune", "--repo", cloud, "--key-file", key, "--volume", "web01-sda", "--keep-daily",
         "90", "--keep-monthly", "0"],
        ["restore", "--repo", cloud, "--key-file", key, "web01-sda@latest", out],
    ], env=env)
    for result in results:
        assert result["code"] == 0, result
    assert len(json.loads(str(results[4]["stdout"]))) == 1
    assert out.read_bytes() == image.read_bytes()
    profile = json.loads((tmp_path / "config" / "clouds.json").read_text())[cloud]
    assert profile == {"endpoint": s3_server.endpoint, "region": "us-east-1",
                       "path_style": True}
