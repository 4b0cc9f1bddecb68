"""Agentless backups of running VMs: machine points, dirty bitmaps, fleecing, hand-over."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from cairn.ops.vm_backup import VmBackupRequest, VmBackupResult, backup_vm
from cairn.restore.writer import restore_image
from cairn.sources.nbd_source import NbdSource
from cairn.sources.qemu_view import PointInTimeView, ViewDisk
from cairn.sources.qmp import Monitor
from cairn.sources.vm_disks import list_disks
from cairn.store.machine_points import MachinePoints
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from tests.sources.live_vm import MIB, LiveVm

ROOT = Path(__file__).resolve().parents[2]
TWO_DISKS = {"vda": 16 * MIB, "vdb": 8 * MIB}


def backup(repo: Repository, vm: LiveVm) -> VmBackupResult:
    return backup_vm(repo, VmBackupRequest(vm.qmp))


def assert_restores(repo: Repository, result: VmBackupResult, refs: dict[str, Path],
                    tmp_path: Path) -> None:
    for d in result.disks:
        out = tmp_path / f"restored-{d.point.id}.img"
        restore_image(PointReader(repo, d.point), out)
        assert out.read_bytes() == refs[d.disk].read_bytes(), d.disk


def references(vm: LiveVm, tmp_path: Path, tag: str) -> dict[str, Path]:
    return {d: vm.reference(d, tmp_path / f"ref-{tag}-{d}.img") for d in vm.disks}


def test_two_disks_full_then_incremental_restore_bit_identical(
        start_vm: Callable[..., LiveVm], repo: Repository, tmp_path: Path) -> None:
    vm = start_vm(TWO_DISKS)
    vm.write("vda", 0, MIB, 0x11)
    vm.write("vdb", 3 * MIB, 2 * MIB, 0x22)
    refs1 = references(vm, tmp_path, "1")
    first = backup(repo, vm)
    assert [(d.disk, d.mode) for d in first.disks] == [("vda", "full"), ("vdb", "full")]
    assert all("first backup" in d.reason for d in first.disks)
    assert first.machine_point.consistency == "crash"
    assert vm.bitmaps() == {d: [f"cairn-{first.machine_point.id}"] for d in TWO_DISKS}

    vm.write("vda", 5 * MIB, 128 * 1024, 0x33)
    vm.write("vdb", 0, 64 * 1024, 0x44)
    refs2 = references(vm, tmp_path, "2")
    second = backup(repo, vm)
    assert [d.mode for d in second.disks] == ["incremental", "incremental"]
    assert [d.point.bytes_read for d in second.disks] == [128 * 1024, 64 * 1024]
    assert vm.bitmaps() == {d: [f"cairn-{second.machine_point.id}"] for d in TWO_DISKS}
    assert vm.leftovers() == []

    assert_restores(repo, first, refs1, tmp_path)
    assert_restores(repo, second, refs2, tmp_path)
    listed = MachinePoints(repo.catalog).list("vm1")
    assert [mp.id for mp in listed] == [first.machine_point.id, second.machine_point.id]
    assert [m.disk for m in listed[1].members] == ["vda", "vdb"]
    assert [m.point.volume for m in listed[1].members] == ["vm1.vda", "vm1.vdb"]


def test_unchanged_vm_reads_nothing(start_vm: Callable[..., LiveVm], repo: Repository) -> None:
    vm = start_vm({"vda": 8 * MIB})
    vm.write("vda", 0, 2 * MIB, 0x55)
    backup(repo, vm)
    again = backup(repo, vm)
    assert again.disks[0].mode == "incremental"
    assert again.disks[0].point.bytes_read == 0


def test_view_holds_the_instant_while_the_guest_writes(
        start_vm: Callable[..., LiveVm], tmp_path: Path) -> None:
    vm = start_vm({"vda": 8 * MIB})
    vm.write("vda", 0, 4 * MIB, 0x61)
    before = vm.reference("vda", tmp_path / "before.img").read_bytes()
    with Monitor(vm.qmp) as monitor:
        view = PointInTimeView(monitor, [ViewDisk(list_disks(monitor)[0], 0, None)], "cairn-t")
        view.open()
        try:
            vm.write("vda", MIB, 2 * MIB, 0x62)
            source = NbdSource(view.socket, "vda")
            try:
                seen = source.pread(0, 8 * MIB)
            finally:
                source.close()
        finally:
            view.close(committed=False)
    assert seen == before
    assert vm.bitmaps() == {"vda": []}
    assert vm.leftovers() == []


def run_killed_backup(vm: LiveVm, repo: Repository) -> set[Path]:
    """Start `cairn backup --qemu` and SIGKILL it while it reads from the view; the folders
    of its fleecing overlays, which it leaves."""
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "backup", "--repo", str(repo.path),
                             "--qemu", str(vm.qmp)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not vm.monitor.execute("query-block-exports"):
            assert proc.poll() is None, "the backup ended before it could be killed"
            assert time.monotonic() < deadline
        proc.kill()
    finally:
        proc.wait()
    files = [Path(n["file"]) for n in vm.monitor.execute("query-named-block-nodes",
                                                         {"flat": True})
             if not n["file"].startswith("json:")]
    return {f.parent for f in files if f.parent.name.startswith("cairn-qemu-")}


def test_killed_backup_loses_no_change(start_vm: Callable[..., LiveVm], repo: Repository,
                                       tmp_path: Path) -> None:
    vm = start_vm({"vda": 64 * MIB, "vdb": 8 * MIB})
    vm.write("vda", 0, 8 * MIB, 0x71)
    first = backup(repo, vm)
    vm.write("vda", 8 * MIB, 48 * MIB, 0x72)  # what the killed backup was reading
    vm.write("vdb", 0, MIB, 0x73)
    overlays = run_killed_backup(vm, repo)
    assert vm.leftovers() != [] and len(overlays) == 1 and all(p.is_dir() for p in overlays)
    vm.write("vda", 60 * MIB, MIB, 0x74)  # after the kill
    refs = references(vm, tmp_path, "after")
    third = backup(repo, vm)
    assert third.leftovers_cleared
    assert [p for p in overlays if p.exists()] == []  # the killed backup's scratch: removed
    assert [d.mode for d in third.disks] == ["incremental", "incremental"]
    assert third.disks[0].point.bytes_read == 49 * MIB
    assert_restores(repo, third, refs, tmp_path)
    assert vm.leftovers() == []
    assert vm.bitmaps() == {d: [f"cairn-{third.machine_point.id}"] for d in vm.disks}
    assert [mp.id for mp in MachinePoints(repo.catalog).list()] == [
        first.machine_point.id, third.machine_point.id]


def test_restarts_persistent_bitmap_survives_unclean_stop_reads_all(
        start_vm: Callable[..., LiveVm], repo: Repository, tmp_path: Path) -> None:
    vm = start_vm({"vda": 8 * MIB})
    vm.write("vda", 0, MIB, 0x81)
    backup(repo, vm)
    vm.stop()
    vm.start()
    vm.write("vda", 2 * MIB, 64 * 1024, 0x82)
    refs = references(vm, tmp_path, "clean")
    after_quit = backup(repo, vm)
    assert after_quit.disks[0].mode == "incremental"
    assert after_quit.disks[0].point.bytes_read == 64 * 1024
    assert_restores(repo, after_quit, refs, tmp_path)

    vm.stop()
    vm.start()  # the bitmap is loaded from the image, which marks it in use there
    vm.write("vda", 4 * MIB, 64 * 1024, 0x83)
    vm.stop(kill=True)
    vm.start()
    refs = references(vm, tmp_path, "killed")
    after_kill = backup(repo, vm)
    assert after_kill.disks[0].mode == "full"
    assert "inconsistent" in after_kill.disks[0].reason
    assert_restores(repo, after_kill, refs, tmp_path)
    assert vm.bitmaps() == {"vda": [f"cairn-{after_kill.machine_point.id}"]}


def test_raw_disk_restart_falls_back_to_a_full_read(
        start_vm: Callable[..., LiveVm], repo: Repository, tmp_path: Path) -> None:
    vm = start_vm({"vda": 8 * MIB}, fmt="raw")
    vm.write("vda", 0, MIB, 0x91)
    backup(repo, vm)
    vm.stop()
    vm.start()
    vm.write("vda", 3 * MIB, MIB, 0x92)
    refs = references(vm, tmp_path, "raw")
    again = backup(repo, vm)
    assert again.disks[0].mode == "full"
    assert "no dirty bitmap" in again.disks[0].reason
    assert_restores(repo, again, refs, tmp_path)


def test_guest_agent_that_does_not_answer_gives_a_crash_consistent_point(
        start_vm: Callable[..., LiveVm], repo: Repository, tmp_path: Path) -> None:
    vm = start_vm({"vda": 8 * MIB})
    vm.write("vda", 0, MIB, 0x41)
    refs = references(vm, tmp_path, "ga")
    result = backup_vm(repo, VmBackupRequest(vm.qmp, guest_agent=vm.guest_agent))
    assert result.machine_point.consistency == "crash"
    assert "not frozen" in result.machine_point.note
    assert "is qemu-ga running in the guest?" in result.machine_point.note
    assert result.pause_seconds < 1.0
    assert_restores(repo, result, refs, tmp_path)
