"""Offsite by policy on a real appliance and a real S3 server: schedule, cloud retention
that is never undone by the next replication (scheduled or by hand), and bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from tests.appliance.harness import Agent, Appliance, cairn, wait_for
from tests.offsite.conftest import s3_env
from tests.s3server import SeaweedS3


def _policy(app: Appliance) -> dict[str, Any]:
    [policy] = json.loads(cairn("offsite", *app.admin_args(), "--json").stdout)
    return policy


def _cloud_points(app: Appliance, url: str, env: dict[str, str]) -> list[str]:
    out = cairn("points", "--repo", url, "--json", env=env).stdout
    return [p["id"] for p in json.loads(out)]


def _offsite_copies(app: Appliance) -> list[str]:
    db = sqlite3.connect(f"file:{app.repo / 'appliance.db'}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT point_id FROM offsite_points ORDER BY created")]
    finally:
        db.close()


def test_policy_replicates_on_schedule_and_cloud_retention_sticks(
        cloud_appliance: Appliance, cloud_url: str, s3_server: SeaweedS3,
        tmp_path: Path) -> None:
    app = cloud_appliance
    env = s3_env(s3_server, tmp_path)
    agent = Agent(app, "web01")
    try:
        disk = tmp_path / "disk.img"
        disk.write_bytes(bytes(range(256)) * 4096 * 4)
        agent.protect("sda", disk)
        local = []
        for k in range(3):
            with disk.open("r+b") as f:
                f.seek(k * 65536)
                f.write(bytes([k + 1]) * 65536)
            local += agent.backup()["points"]
        out = cairn("offsite", *app.admin_args(), "set", "web01", "--to", cloud_url,
                    "--every", "1h", "--retention", "last=1")
        assert "web01: replicated to" in out.stdout
        first = wait_for(lambda: (p := _policy(app))["last_ok"] and p, timeout=60)
        assert first["last_error"] is None
        assert first["last_report"]["points_sent"] == 3
        assert first["last_report"]["cloud_deleted"] == 2
        assert _cloud_points(app, cloud_url, env) == [local[-1]]
        assert first["last_report"]["cloud_stored_bytes"] > 0
        assert _offsite_copies(app) == [local[-1]]  # what the console's timeline shows
        # The next run sends nothing again: the cloud's retention removed those points.
        again = json.loads(cairn("offsite", *app.admin_args(), "--json", "run", "web01",
                                 "--wait").stdout)["last_report"]
        assert again["points_sent"] == 0 and again["bytes_sent"] == 0
        assert again["not_sent_removed"] == 2
        # ... nor does a replication run by hand, and local retention is untouched.
        by_hand = json.loads(cairn("replicate", "--repo", app.repo, "--to", cloud_url,
                                   "--json", env=env).stdout)
        assert by_hand["points"] == [] and by_hand["bytes_sent"] == 0
        with app.admin() as c:
            assert [p["id"] for p in c.json("GET", "/api/v1/machines/web01/points")] == local
        # A new point goes at the next run, and the cloud keeps only it.
        with disk.open("r+b") as f:
            f.write(b"\xee" * 65536)
        [new] = agent.backup()["points"]
        out = cairn("offsite", *app.admin_args(), "run", "web01", "--wait").stdout
        assert "sent 1 point(s)" in out and "cloud deleted 1" in out
        assert _cloud_points(app, cloud_url, env) == [new]
        # On a short interval it runs again by itself. (5 s: a policy is "behind" after two
        # intervals, and one run of this appliance takes seconds on a loaded machine.)
        cairn("offsite", *app.admin_args(), "set", "web01", "--to", cloud_url, "--every", "5s")
        last = _policy(app)["last_run"]
        wait_for(lambda: _policy(app)["last_run"] > last + 1, timeout=60)
        listing = cairn("offsite", *app.admin_args()).stdout
        assert "web01" in listing and cloud_url in listing
        with app.admin() as c:
            assert not [a for a in c.json("GET", "/api/v1/alerts")["alerts"]
                        if a["kind"] == "offsite_behind"]
    finally:
        agent.stop()


def test_run_now_outside_the_window_and_bad_policies_change_nothing(
        cloud_appliance: Appliance, cloud_url: str) -> None:
    app = cloud_appliance
    Agent(app, "db01")
    base = ["offsite", *app.admin_args(), "set", "db01", "--to", cloud_url]
    bad = [(["--window", "25:00-06:00"], "HH:MM-HH:MM"),
           (["--window", "22:00"], "HH:MM-HH:MM"),
           (["--retention", "daily=ninety"], "NAME=COUNT"),
           (["--retention", ""], "names no rule"),
           (["--bandwidth", "fast"], "--bandwidth"),
           (["--every", "0.1s"], "shorter than the minimum")]
    for args, message in bad:
        result = cairn(*base, *args, check=False)
        assert result.returncode != 0 and message in result.stderr, (args, result.stderr)
    unknown = cairn("offsite", *app.admin_args(), "set", "nosuch", "--to", cloud_url,
                    check=False)
    assert unknown.returncode == 1 and "no machine 'nosuch'" in unknown.stderr
    not_s3 = cairn(*base[:-1], "/srv/elsewhere", check=False)
    assert not_s3.returncode == 1 and "s3://BUCKET/PREFIX" in not_s3.stderr
    assert json.loads(cairn("offsite", *app.admin_args(), "--json").stdout) == []

    # A window that is closed now: nothing runs by schedule, `run --wait` runs at once.
    import time
    hour = time.localtime().tm_hour
    closed = f"{(hour + 2) % 24:02d}:00-{(hour + 3) % 24:02d}:00"
    cairn(*base, "--every", "1s", "--window", closed, "--send", "daily")
    time.sleep(1.5)
    assert _policy(app)["last_run"] is None
    done = cairn("offsite", *app.admin_args(), "run", "db01", "--wait")
    assert "sent 0 point(s)" in done.stdout  # db01 has no point yet
    policy = _policy(app)
    assert policy["last_ok"] is not None and policy["window"] == closed
    cairn("offsite", *app.admin_args(), "remove", "db01")
    assert json.loads(cairn("offsite", *app.admin_args(), "--json").stdout) == []
