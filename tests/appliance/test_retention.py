"""Automatic retention on the appliance: one planner with `cairn prune`, failures on the job."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.appliance.harness import Agent, Appliance, cairn, wait_for


def _finished(appliance: Appliance, machine: str, count: int) -> list[dict[str, Any]]:
    jobs = [j for j in appliance.jobs(machine) if j["state"] in ("succeeded", "failed")]
    return jobs if len(jobs) >= count else []


def _run_job(appliance: Appliance, machine: str, done_before: int) -> dict[str, Any]:
    with appliance.admin() as c:
        c.json("POST", f"/api/v1/machines/{machine}/jobs", json={})
    return wait_for(lambda: _finished(appliance, machine, done_before + 1), timeout=60)[-1]


def test_scheduled_retention_keeps_a_cloned_point_and_the_agent_runs_on(
        appliance: Appliance, make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """The bug a new user met: a clone made retention raise, the agent's finish got a 500 and
    the agent daemon exited. Now the cloned point is kept, with the reason on the job."""
    agent = make_agent("web01")
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(range(256)) * 4096)
    agent.protect("sda", disk)
    daemon = agent.start()
    cairn("schedule", *appliance.admin_args(), "set", "web01", "--every", "1h",
          "--retention", "last=1")
    first = _run_job(appliance, "web01", 0)
    assert first["state"] == "succeeded", first
    cloned = first["points"][0]
    cairn("clone", "--repo", appliance.repo, cloned, "--name", "keepme")

    second = _run_job(appliance, "web01", 1)
    third = _run_job(appliance, "web01", 2)

    for job in (second, third):
        assert job["state"] == "succeeded", job
        assert job["retention"]["error"] is None, job
        assert {"id": cloned, "rules": ["has a clone"]} in job["retention"]["kept"], job
    assert second["points"][0] in third["retention"]["deleted"]
    assert third["retention"]["held_until"] > time.time()  # held restorable, not gone
    held = json.loads(cairn("points", "--repo", appliance.repo, "--deleted", "--json").stdout)
    assert second["points"][0] in [p["id"] for p in held]
    assert daemon.poll() is None, (agent.dir / "agent.log").read_text()[-3000:]
    points = json.loads(cairn("points", "--repo", appliance.repo, "--json").stdout)
    assert [p["id"] for p in points] == [cloned, third["points"][0]]
    listing = cairn("jobs", *appliance.admin_args(), "--json").stdout
    assert json.loads(listing)[-1]["retention"]["kept"][0]["rules"] == ["has a clone"]
    # the table says so too: a manual run's retention is never silent
    rows = cairn("jobs", *appliance.admin_args()).stdout.splitlines()
    assert "RETENTION" in rows[0] and "deleted 1 (last=1, undelete until" in rows[-1], rows
