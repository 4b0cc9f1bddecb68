"""The appliance survives its own loss: a new one is built from the bucket alone, agents
keep their tokens and pinned certificate and go on with incremental backups, and the admin
keeps the admin token."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.appliance.harness import Agent, Appliance, cairn, wait_for
from tests.offsite.conftest import s3_env
from tests.s3server import SeaweedS3


def _offsite(app: Appliance) -> dict[str, object]:
    [policy] = json.loads(cairn("offsite", *app.admin_args(), "--json").stdout)
    return policy


def test_new_appliance_from_the_bucket_and_agents_go_on_incrementally(
        tmp_path: Path, s3_server: SeaweedS3, cloud_url: str) -> None:
    old_env = s3_env(s3_server, tmp_path / "old-node")
    app = Appliance(tmp_path, alerts={"tick_seconds": 0.2}, env=old_env, encrypt=True)
    app.start()
    agent = Agent(app, "web01")
    try:
        disk = tmp_path / "disk.img"
        disk.write_bytes(os.urandom(4 << 20))
        agent.protect("sda", disk)
        agent.backup()
        with disk.open("r+b") as f:
            f.write(os.urandom(65536))
        [kept] = agent.backup()["points"]
        cairn("schedule", *app.admin_args(), "set", "web01", "--every", "1h", "--screenshot",
              "weekly")
        cairn("vm", "lan", "add", "office", *app.admin_args())
        cairn("offsite", *app.admin_args(), "set", "web01", "--to", cloud_url, "--every", "1h")
        policy = wait_for(lambda: (p := _offsite(app))["last_ok"] and p, timeout=60)
        assert policy["last_error"] is None and policy["last_report"]["state_bytes"] > 0
        key = tmp_path / "kept-apart.key"
        shutil.copyfile(app.repo / "key", key)
        old_fingerprint = app.pem
        old_admin = (app.repo / "admin-token").read_text()
        app.stop(kill=True)
        shutil.rmtree(app.repo)  # the appliance is lost; the bucket and the key remain

        # A new machine: empty repository folder, no cache, no keys, the same address.
        app.repo = tmp_path / "new-repo"
        app.env = {**app.env, **s3_env(s3_server, tmp_path / "new-node")}
        app.start("--recover-from", cloud_url, "--key-file", str(key))
        assert app.pem == old_fingerprint
        assert (app.repo / "admin-token").read_text() == old_admin  # app.admin() uses it
        with app.admin() as c:
            [machine] = c.json("GET", "/api/v1/machines")
            assert machine["name"] == "web01" and machine["schedule"]["every"] == 3600
            assert [p["id"] for p in c.json("GET", "/api/v1/machines/web01/points")] == [kept]
            assert c.json("GET", "/api/v1/verification")[0]["screenshot"] == "weekly"
            assert [lan["name"] for lan in c.json("GET", "/api/v1/lans")] == ["office"]
        assert _offsite(app)["target"] == cloud_url

        with disk.open("r+b") as f:
            f.seek(1 << 20)
            f.write(os.urandom(65536))
        summary = agent.backup()  # same token, same pinned certificate
        [volume] = summary["volumes"]
        assert volume["mode"] in ("scan", "fiemap"), volume
        assert volume["bytes_sent"] <= 1.1 * 65536 + 4096, volume
        restored = tmp_path / "restored.img"
        cairn("restore", "--repo", app.repo, volume["point"], restored)
        assert restored.read_bytes() == disk.read_bytes()
    finally:
        agent.stop()
        app.stop()


def test_recover_from_refuses_a_bucket_without_state_a_wrong_key_and_a_used_folder(
        tmp_path: Path, s3_server: SeaweedS3, cloud_url: str) -> None:
    env = s3_env(s3_server, tmp_path)
    local = tmp_path / "local"
    cairn("init", "--repo", local, "--encrypt")
    cairn("init", "--repo", cloud_url, "--key-file", local / "key", env=env)
    serve = ["serve", "--repo", tmp_path / "new", "--listen", "127.0.0.1:1",
             "--recover-from", cloud_url]
    empty = cairn(*serve, "--key-file", local / "key", env=env, check=False)
    assert empty.returncode != 0 and "holds no appliance state" in empty.stderr
    assert not (tmp_path / "new").exists()
    other = tmp_path / "other"
    cairn("init", "--repo", other, "--encrypt")
    wrong = cairn(*serve, "--key-file", other / "key", env=env, check=False)
    assert wrong.returncode != 0 and "is not the key of" in wrong.stderr
    no_key = cairn(*serve, env=env, check=False)
    assert no_key.returncode != 0 and "--key-file" in no_key.stderr
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "something").write_text("x")
    used = cairn(*serve, "--key-file", local / "key", env=env, check=False)
    assert used.returncode != 0 and "not empty" in used.stderr
