"""Agentless machines in the appliance: `cairn machines add NAME --qemu SOCKET`, then the
schedule backs the running VM up as machine points and retention keeps them whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.appliance.harness import Appliance, cairn, wait_for
from tests.sources.live_vm import MIB, LiveVm


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[LiveVm]:
    folder = tmp_path / "vm"
    folder.mkdir()
    machine = LiveVm(folder, {"vda": 8 * MIB, "vdb": 4 * MIB}, name="web01")
    machine.create_images()
    try:
        yield machine.start()
    finally:
        machine.stop(kill=True)


def test_scheduled_agentless_backups_and_retention(appliance: Appliance, vm: LiveVm,
                                                   tmp_path: Path) -> None:
    vm.write("vda", 0, MIB, 0x5A)
    added = json.loads(cairn("machines", *appliance.admin_args(), "--json", "add", "web01",
                             "--qemu", vm.qmp).stdout)
    assert added == {"machine": "web01", "qemu": str(vm.qmp), "guest_agent": None}
    cairn("schedule", *appliance.admin_args(), "set", "web01", "--every", "1s",
          "--retention", "last=2")
    wait_for(lambda: sum(j["state"] == "succeeded" for j in appliance.jobs("web01")) >= 3,
             timeout=60)
    jobs = appliance.jobs("web01")
    assert not [j for j in jobs if j["state"] == "failed"], jobs  # missed: still busy
    cairn("schedule", *appliance.admin_args(), "set", "web01", "--every", "1h",
          "--retention", "last=2")  # no more slots; retention stays the schedule's
    wait_for(lambda: not [j for j in appliance.jobs("web01")
                          if j["state"] in ("queued", "running")], timeout=30)
    listed = json.loads(cairn("points", "--repo", appliance.repo, "--machine", "web01",
                              "--json").stdout)
    assert len(listed) == 2
    with appliance.admin() as c:
        points = c.json("GET", "/api/v1/machines/web01/points")
    assert sorted(p["id"] for p in points) == sorted(
        v["id"] for mp in listed for v in mp["volumes"])
    assert [v["disk"] for v in listed[-1]["volumes"]] == ["vda", "vdb"]
    ref = vm.reference("vda", tmp_path / "ref.img")
    cairn("restore", "--repo", appliance.repo, listed[-1]["id"], tmp_path / "out")
    assert (tmp_path / "out" / "vda.img").read_bytes() == ref.read_bytes()


def test_adding_a_socket_that_is_not_qemu_is_refused(appliance: Appliance,
                                                     tmp_path: Path) -> None:
    result = cairn("machines", *appliance.admin_args(), "add", "ghost", "--qemu",
                   tmp_path / "none.sock", check=False)
    assert result.returncode != 0
    assert "no QEMU monitor socket" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
