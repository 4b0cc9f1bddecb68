"""The scheduler with compressed time: intervals, no overlap, missed slots, retention."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

from tests.appliance.harness import Agent, Appliance, cairn, wait_for


def test_interval_schedule_runs_jobs_without_overlap_and_prunes(
        appliance: Appliance, make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    agent = make_agent("web01")
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(range(256)) * 4096)
    agent.protect("sda", disk)
    agent.start()
    cairn("schedule", *appliance.admin_args(), "set", "web01", "--every", "1s",
          "--retention", "last=2")
    wait_for(lambda: sum(j["state"] == "succeeded" for j in appliance.jobs("web01")) >= 4,
             timeout=30)
    jobs = [j for j in appliance.jobs("web01") if j["state"] == "succeeded"]
    assert all(j["reason"] == "schedule" for j in jobs)
    spans = sorted((j["started"], j["finished"]) for j in jobs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start, "two jobs of one machine overlapped"
    with appliance.admin() as c:
        points = c.json("GET", "/api/v1/machines/web01/points")
    assert len(points) == 2, points
    listing = cairn("schedule", *appliance.admin_args()).stdout
    assert "web01" in listing and "last=2" in listing


def test_offline_machine_misses_its_slot(appliance: Appliance,
                                         make_agent: Callable[..., Agent]) -> None:
    make_agent("laptop")
    time.sleep(2.2)  # paired, then silent: offline after 2 s
    cairn("schedule", *appliance.admin_args(), "set", "laptop", "--every", "1s")
    missed = wait_for(lambda: [j for j in appliance.jobs("laptop") if j["state"] == "missed"],
                      timeout=10)
    assert "offline" in missed[0]["error"]
    assert not [j for j in appliance.jobs("laptop") if j["state"] in ("queued", "running")]
    assert 'cairn_jobs{state="missed"}' in appliance.metrics()


def test_cron_schedule_and_busy_machine(appliance: Appliance,
                                        make_agent: Callable[..., Agent]) -> None:
    make_agent("busy")
    with appliance.admin() as c:
        c.json("POST", "/api/v1/machines/busy/jobs", json={})
        c.json("PUT", "/api/v1/machines/busy/schedule", json={"cron": "* * * * *"})
        machine = c.json("GET", "/api/v1/machines/busy")
        assert machine["schedule"]["cron"] == "* * * * *"
        assert machine["schedule"]["next_run"] <= time.time() + 61
        c.json("PUT", "/api/v1/machines/busy/schedule", json={"every": "1s"})
    # The manual job is still queued (no agent runs): each slot is recorded as missed.
    missed = wait_for(lambda: [j for j in appliance.jobs("busy") if j["state"] == "missed"],
                      timeout=10)
    assert "still running" in missed[0]["error"] or "offline" in missed[0]["error"]
    assert sum(j["state"] == "queued" for j in appliance.jobs("busy")) == 1
