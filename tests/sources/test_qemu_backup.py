"""Agentless backups of running VMs: machine points, dirty bitmaps, fleecing, hand-over."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cairn.ops.vm_backup import VmBackupRequest, VmBackupResult, backup_vm
from cairn.restore.writer import restore_image
from cairn.store.machine_points import MachinePoints
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from tests.sources.live_vm import MIB, LiveVm

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
    assert [m.point.volume for m in listed[1].members] == ["vm1-vda", "vm1-vdb"]


def test_unchanged_vm_reads_nothing(start_vm: Callable[..., LiveVm], repo: Repository) -> None:
    vm = start_vm({"vda": 8 * MIB})
    vm.write("vda", 0, 2 * MIB, 0x55)
    backup(repo, vm)
    again = backup(repo, vm)
    assert again.disks[0].mode == "incremental"
    assert again.disks[0].point.bytes_read == 0
