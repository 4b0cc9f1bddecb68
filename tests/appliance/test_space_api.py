"""Space now, from the REST API: a cloud prune (its dry run first, saying what it would
free), a conversion of a legacy cloud repository, and a repack, each a task followed to its
end, on a real SeaweedFS bucket that an offsite policy names. Refusals answer one line: an
unknown target before anything starts; a bucket the keys may not list, or a pack cut short
(named with its index), in the task's result, nothing deleted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cairn.appliance import tokens
from cairn.appliance.app import create_app
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.offsite import OffsiteSettings, OffsiteTable
from cairn.appliance.state import State
from cairn.ops.points import delete
from cairn.replication.replicate import replicate
from cairn.store.cloud import init_cloud, open_cloud
from cairn.store.repository import Repository
from tests.appliance.harness import Appliance, cairn, wait_for
from tests.replication.test_cloud_prune import _make_legacy
from tests.s3server import SECRET_KEY, SeaweedS3
from tests.store.helpers import backup, make_image, mutate

GRACE = 1.0


@dataclass
class Api:
    client: TestClient
    url: str
    server: SeaweedS3

    def objects(self) -> dict[str, int]:
        s3 = self.server.client()
        base = self.url.removeprefix(f"s3://{self.server.bucket}/") + "/"
        listing = s3.list_objects_v2(Bucket=self.server.bucket, Prefix=base)
        return {o["Key"][len(base):]: o["Size"] for o in listing.get("Contents", [])
                if not o["Key"][len(base):].startswith(("locks/", "prune.time", "clock"))}

    def age(self) -> None:
        """Until what is in the bucket is older than the grace by the server's clock."""
        s3 = self.server.client()
        key = self.url.removeprefix(f"s3://{self.server.bucket}/") + "/clock"

        def stamp() -> Any:
            s3.put_object(Bucket=self.server.bucket, Key=key, Body=b"")
            return s3.head_object(Bucket=self.server.bucket, Key=key)["LastModified"]

        start = stamp()
        wait_for(lambda: (stamp() - start).total_seconds() > GRACE + 1, 30, 0.25)

    def task(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Start a task and follow it to its end."""
        started = self.client.post(path, json=body)
        assert started.status_code == 202, started.text
        # The answer is the task as it is then: a quick one (a dry run) may have ended.
        assert started.json()["state"] in {"running", "succeeded", "failed"}
        task_id = started.json()["id"]
        done: dict[str, Any] = wait_for(
            lambda: (t := self.client.get(f"/api/v1/tasks/{task_id}").json())["state"]
            != "running" and t, timeout=120, every=0.1)
        return done


@pytest.fixture
def api(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[Api]:
    """An appliance whose repository has three points, sent to the cloud repository its
    offsite policy names."""
    for name, value in {**s3_server.cairn_env(tmp_path), "CAIRN_CLOUD_LOCK_SECONDS": str(GRACE),
                        "CAIRN_CLOUD_PACK_BYTES": str(128 << 10)}.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.bucket}/space-{uuid.uuid4().hex[:10]}"
    repo = tmp_path / "repo"
    image = tmp_path / "disk.img"
    data = make_image(image, 1024 * 1024, seed=3, fill=0.6)
    with Repository.init(repo) as local:
        for seed in range(3):
            mutate(image, data, seed=seed, writes=8)
            backup(local, "web01.sda", image)
        with init_cloud(url, None) as cloud:
            replicate(local, cloud)
    state = State(repo / "appliance.db")
    state.add_machine("web01")
    machine = state.machine("web01")
    assert machine is not None
    OffsiteTable(state).set(machine.id, OffsiteSettings(url, None, 3600.0, "all", None, None,
                                                        None, None))
    token = tokens.add(state, "admin", "space test")["token"]
    client = TestClient(create_app(repo, state, ApplianceConfig()),
                        base_url="https://testserver",
                        headers={"Authorization": f"Bearer {token}"})
    try:
        yield Api(client, url, s3_server)
    finally:
        client.close()
        state.close()


def test_a_cloud_prune_from_the_api_previews_then_frees_what_it_said(api: Api) -> None:
    assert api.client.get("/api/v1/space/cloud").json() == [
        {"to": api.url, "endpoint": None, "machines": ["web01"]}]
    api.age()
    with open_cloud(api.url, None) as cloud:  # condemns what only these points needed
        delete(cloud, [p.id for p in cloud.catalog.points()[:2]], now=True)
    condemned = {n for n in api.objects() if n.startswith("condemned/")}
    assert condemned
    api.age()

    before = api.objects()
    preview = api.task("/api/v1/space/cloud/prune", {"to": api.url, "dry_run": True})
    assert preview["state"] == "succeeded", preview["result"]
    assert preview["kind"] == "cloud-prune-preview" and preview["subject"] == api.url
    would = preview["report"]
    assert would["dry_run"] and would["bytes_freed"] > 0
    assert {f"condemned/{p}" for p in would["packs_deleted"]} == condemned
    assert "would condemn" in preview["result"] and "\n" not in preview["result"]
    assert api.objects() == before

    done = api.task("/api/v1/space/cloud/prune", {"to": api.url})
    assert done["state"] == "succeeded", done["result"]
    assert sorted(done["report"]["packs_deleted"]) == sorted(would["packs_deleted"])
    phases = {p["step"]: p for p in done["phases"]}
    deleted = phases["packs condemned a grace ago, deleted"]
    assert deleted["done"] == deleted["total"] == len(would["packs_deleted"])
    assert deleted["unit"] == "items" and done["phases"][0]["step"].startswith("listing")
    assert "volumes whose points changed, counted" in phases and "packs condemned" in phases
    assert done["progress"]["step"] == done["phases"][-1]["step"]
    assert done["report"]["bytes_freed"] == would["bytes_freed"]
    assert sum(api.objects().values()) < sum(before.values())
    assert not {n for n in api.objects() if n.startswith("condemned/")}
    listed = api.client.get("/api/v1/tasks").json()
    assert [t["id"] for t in listed] == [done["id"], preview["id"]]


def test_a_conversion_and_a_repack_run_as_tasks_with_progress(api: Api) -> None:
    _make_legacy(_Site(api.url))
    legacy = {n: s for n, s in api.objects().items() if n.startswith("chunks/")}
    assert legacy
    done = api.task("/api/v1/space/cloud/convert", {"to": api.url})
    assert done["state"] == "succeeded", done["result"]
    assert done["report"]["chunks_packed"] == len(legacy)
    assert done["progress"] == {"done": sum(legacy.values()), "total": sum(legacy.values()),
                                "step": "legacy chunks", "unit": "bytes"}
    assert not [n for n in api.objects() if n.startswith("chunks/")]

    repacked = api.task("/api/v1/space/repack", {"dry_run": True})
    assert repacked["state"] == "succeeded", repacked["result"]
    assert repacked["subject"] == "repository" and "points" in repacked["report"]
    gathered = len(repacked["report"]["points"])
    assert gathered >= 1 and repacked["phases"] == [  # a dry run compacts nothing
        {"step": "volumes' newest points gathered", "done": gathered, "total": gathered,
         "unit": "items"}]


@dataclass
class _Site:
    """What `_make_legacy` needs of a site: its URL."""

    url: str


def test_refusals_are_one_line(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    unknown = api.client.post("/api/v1/space/cloud/prune", json={"to": "s3://elsewhere/x"})
    assert unknown.status_code == 404
    assert "no offsite policy sends to 's3://elsewhere/x'" in unknown.json()["detail"]
    assert api.client.get("/api/v1/tasks/99").status_code == 404
    before = api.objects()
    monkeypatch.setenv("CAIRN_S3_ACCESS_KEY", "cairn-test-no-list")
    monkeypatch.setenv("CAIRN_S3_SECRET_KEY", SECRET_KEY)
    for path in ("/api/v1/space/cloud/prune", "/api/v1/space/cloud/convert"):
        refused = api.task(path, {"to": api.url})
        assert refused["state"] == "failed"
        assert "AccessDenied to LIST" in refused["result"] and "\n" not in refused["result"]
        assert api.server.bucket in refused["result"]
    assert api.objects() == before

    # A pack cut short: the prune names it and its index, and deletes nothing.
    monkeypatch.setenv("CAIRN_S3_ACCESS_KEY", api.server.access_key)
    monkeypatch.setenv("CAIRN_S3_SECRET_KEY", api.server.secret_key)
    pack = max((n for n in before if n.startswith("packs/")), key=lambda n: before[n])
    s3, key = api.server.client(), f"{api.url.removeprefix(f's3://{api.server.bucket}/')}/{pack}"
    body = s3.get_object(Bucket=api.server.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=api.server.bucket, Key=key, Body=body[: len(body) // 2])
    api.age()
    cut = api.objects()
    refused = api.task("/api/v1/space/cloud/prune", {"to": api.url})
    assert refused["state"] == "failed" and "\n" not in refused["result"]
    assert pack in refused["result"] and f"index/{pack.rpartition('/')[2]}" in refused["result"]
    assert "nothing was pruned" in refused["result"] and api.objects() == cut


def test_cairn_tasks_follows_a_task_the_api_started(appliance: Appliance) -> None:
    """`cairn tasks` lists what the API (or the console) started on a running appliance;
    `tasks show ID --wait` follows one to its end."""
    with appliance.admin() as client:
        started = client.json("POST", "/api/v1/space/repack", json={"dry_run": True})
    shown = json.loads(cairn("tasks", *appliance.admin_args(), "show", str(started["id"]),
                             "--wait", "--json").stdout)
    assert shown["state"] == "succeeded" and shown["kind"] == "repack-preview"
    assert shown["started_iso"] and shown["finished"] >= shown["started"]
    listed = json.loads(cairn("tasks", *appliance.admin_args(), "--json").stdout)
    assert [t["id"] for t in listed] == [started["id"]]
    table = cairn("tasks", *appliance.admin_args()).stdout
    assert "repack-preview" in table and "succeeded" in table
    shown_text = cairn("tasks", *appliance.admin_args(), "show", str(started["id"])).stdout
    assert "\n  volumes' newest points gathered" in shown_text  # its phases, one a line
    missing = cairn("tasks", *appliance.admin_args(), "show", "99", check=False)
    assert missing.returncode != 0 and "no task 99" in missing.stderr
