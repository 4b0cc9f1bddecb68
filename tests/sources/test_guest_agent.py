"""A real guest agent: the guest's file systems are frozen for the instant of the snapshot
only, the point says it is application-consistent, and the file system in it is clean."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from cairn.ops.vm_backup import VmBackupRequest, backup_vm
from cairn.restore.writer import restore_image
from cairn.sources.guest_agent import GuestAgent
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from tests.sources.guest_image import READY, build_guest
from tests.sources.live_vm import MIB, LiveVm

T = TypeVar("T")


@pytest.fixture(scope="session")
def guest_boot(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_guest(tmp_path_factory.mktemp("guest"))


@pytest.fixture
def guest(tmp_path: Path, guest_boot: tuple[Path, Path]) -> Iterator[LiveVm]:
    folder = tmp_path / "guest"
    folder.mkdir()
    vm = LiveVm(folder, {"vda": 32 * MIB}, name="app01", boot=guest_boot)
    raw = folder / "vda.raw"
    with raw.open("wb") as f:
        f.truncate(32 * MIB)
    subprocess.run(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0",
                    str(raw)], check=True)
    subprocess.run(["qemu-img", "convert", "-q", "-O", "qcow2", str(raw), str(vm.image("vda"))],
                   check=True)
    try:
        vm.start()
        vm.wait_for_serial(READY, timeout=300)
        yield vm
    finally:
        vm.stop(kill=True)


def guest_run(agent: GuestAgent, script: str) -> str:
    """Run a shell script in the guest through the agent; its output."""
    pid = agent.execute("guest-exec", {"path": "/bin/sh", "arg": ["-c", script],
                                       "capture-output": True})["pid"]
    deadline = time.monotonic() + 60
    while not (status := agent.execute("guest-exec-status", {"pid": pid}))["exited"]:
        assert time.monotonic() < deadline, "the guest command did not finish"
        time.sleep(0.2)
    assert status["exitcode"] == 0, status
    return base64.b64decode(status.get("out-data", "")).decode()


def with_agent(vm: LiveVm, action: Callable[[GuestAgent], T]) -> T:
    """One agent session (the agent's socket takes one client at a time: cairn needs it)."""
    agent = GuestAgent(vm.guest_agent, timeout=30)
    try:
        return action(agent)
    finally:
        agent.close()


def test_frozen_for_the_snapshot_and_clean_in_the_point(guest: LiveVm, repo: Repository,
                                                         tmp_path: Path) -> None:
    with_agent(guest, lambda a: guest_run(a, "echo written-in-the-guest > /data/hello"))
    result = backup_vm(repo, VmBackupRequest(guest.qmp, guest_agent=guest.guest_agent))
    assert with_agent(guest, lambda a: a.execute("guest-fsfreeze-status")) == "thawed"
    assert result.machine_point.note == "guest agent froze 1 file system(s)"
    assert result.machine_point.consistency == "application"
    out = tmp_path / "vda.img"
    restore_image(PointReader(repo, result.disks[0].point), out)
    fsck = subprocess.run(["e2fsck", "-fn", str(out)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    cat = subprocess.run(["debugfs", "-R", "cat /hello", str(out)], capture_output=True,
                         text=True, check=True)
    assert cat.stdout == "written-in-the-guest\n"
