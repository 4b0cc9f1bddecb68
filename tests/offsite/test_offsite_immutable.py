"""`offsite set --immutable` on a real appliance and SeaweedFS: refused on a bucket that
cannot lock (saying why, nothing saved), and on one that can, each point sent is under
COMPLIANCE Object Lock that the bucket's own credentials cannot delete."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.appliance.harness import Agent, Appliance, cairn, wait_for
from tests.offsite.conftest import s3_env
from tests.s3server import SeaweedS3


def _policies(app: Appliance) -> list[dict[str, Any]]:
    return list(json.loads(cairn("offsite", *app.admin_args(), "--json").stdout))


def test_immutable_offsite_is_refused_without_object_lock_and_locks_with_it(
        cloud_appliance: Appliance, web01: Agent, cloud_url: str, s3_server: SeaweedS3,
        tmp_path: Path) -> None:
    app, agent = cloud_appliance, web01
    [point] = agent.backup()["points"]

    refused = cairn("offsite", *app.admin_args(), "set", "web01", "--to", cloud_url,
                    "--immutable", "1d", check=False)
    assert refused.returncode != 0
    assert "cannot hold immutable points" in refused.stderr, refused.stderr
    assert _policies(app) == []

    bucket = "offsite-immutable"
    s3 = s3_server.client()
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    url = f"s3://{bucket}/web"
    done = cairn("offsite", *app.admin_args(), "set", "web01", "--to", url, "--immutable",
                 "1d")
    assert "immutable for 86400s" in done.stdout
    assert "SeaweedFS" in done.stderr and "lifecycle worker" in done.stderr, done.stderr
    policy = wait_for(lambda: (p := _policies(app)[0])["last_ok"] and p, timeout=60)
    assert policy["immutable"] == 86400 and policy["last_error"] is None
    report = policy["last_report"]
    assert report["points_sent"] == 1 and report["locked_until"] >= time.time() + 86400 - 60

    key = f"web/points/web01.sda/{point}.json"
    held = s3.get_object_retention(Bucket=bucket, Key=key)["Retention"]
    assert held["Mode"] == "COMPLIANCE"
    assert held["RetainUntilDate"].timestamp() >= report["locked_until"] - 1
    version = s3.list_object_versions(Bucket=bucket, Prefix=key)["Versions"][0]["VersionId"]
    with pytest.raises(Exception, match="AccessDenied"):
        s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
    listed = json.loads(cairn("points", "--repo", url, "--json",
                              env=s3_env(s3_server, tmp_path)).stdout)
    assert [(p["id"], p["locked_until"]) for p in listed] == [(point, report["locked_until"])]
