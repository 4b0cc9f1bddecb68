"""Screenshot verification by schedule on a real appliance: a point that boots is proven
with its picture and text kept beside it, booted with every disk of its machine; one that
does not raises an alert."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.appliance.harness import Agent, Appliance, cairn, wait_for


@pytest.fixture
def appliance(tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(tmp_path, alerts={"tick_seconds": 0.2}, tick_seconds=0.2)
    try:
        app.start()
        yield app
    finally:
        app.stop()


def _checks(app: Appliance, machine: str) -> list[dict[str, Any]]:
    points = json.loads(cairn("points", "--repo", app.repo, "--json").stdout)
    return [p["verification"] for p in points
            if p["volume"].startswith(machine + ".") and p["verification"]]


def test_each_new_point_is_booted_and_a_failure_alerts(
        appliance: Appliance, bootable_image: Path, tmp_path: Path) -> None:
    good_disk = tmp_path / "good.img"
    shutil.copyfile(bootable_image, good_disk)
    bad_disk = tmp_path / "bad.img"
    bad_disk.write_bytes(b"\0" * (8 << 20))
    data_disk = tmp_path / "data.img"
    data_disk.write_bytes(bytes(range(256)) * 4096)
    agents = [Agent(appliance, "web01"), Agent(appliance, "broken")]
    try:
        agents[0].protect("sdb", data_disk)  # web01 has a data disk beside its boot disk
        for agent, disk in zip(agents, (good_disk, bad_disk), strict=True):
            agent.protect("sda", disk)
            out = cairn("schedule", *appliance.admin_args(), "--json", "set", agent.name,
                        "--every", "1h", "--screenshot", "each")
            assert json.loads(out.stdout)["verification"]["screenshot"] == "each"
            agent.backup()
        [good] = wait_for(lambda: _checks(appliance, "web01"), timeout=240)
        assert good["status"] == "booted", good
        assert "text console login" in good["reason"]
        assert "booted with 2 disks" in good["reason"]  # QEMU's own count of attached disks
        assert "login" in good["ocr_text"] and Path(good["screenshot"]).stat().st_size > 0
        [bad] = wait_for(lambda: _checks(appliance, "broken"), timeout=240)
        assert bad["status"] in ("failed", "timed_out"), bad
        with appliance.admin() as c:
            alerts = c.json("GET", "/api/v1/alerts")["alerts"]
        [alert] = [a for a in alerts if a["kind"] == "screenshot_failed"]
        assert alert["machine"] == "broken" and "did not boot" in alert["message"]
        # A verified point is not booted again.
        assert len(_checks(appliance, "web01")) == 1
    finally:
        for agent in agents:
            agent.stop()


def test_bad_verification_settings_are_refused(appliance: Appliance) -> None:
    Agent(appliance, "web01")
    base = ["schedule", *appliance.admin_args(), "set", "web01", "--every", "1h"]
    bad = cairn(*base, "--verify-data", "0", check=False)
    assert bad.returncode != 0 and "--verify-data 0" in bad.stderr
    with appliance.admin() as c:
        assert c.json("GET", "/api/v1/verification") == []
    unknown = cairn("schedule", *appliance.admin_args(), "set", "nosuch", "--every", "1h",
                    "--screenshot", "daily", check=False)
    assert unknown.returncode == 1 and "nosuch" in unknown.stderr
