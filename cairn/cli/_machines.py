"""What the commands about machine points share: their JSON and their one-line summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cairn.cli._common import human_bytes, print_json, table, when
from cairn.ops.machine_points import machine_points_of
from cairn.ops.points import point_json
from cairn.store.machine_points import MachinePoint
from cairn.store.repository import Repository

if TYPE_CHECKING:
    from cairn.ops.vm_backup import VmBackupResult


def machine_point_json(mp: MachinePoint) -> dict[str, Any]:
    return {"id": mp.id, "machine": mp.machine, "created_unix": mp.created,
            "consistency": mp.consistency, "note": mp.note, "size": mp.size,
            "volumes": [{"disk": m.disk, **point_json(m.point)} for m in mp.members]}


def vm_backup_json(result: VmBackupResult) -> dict[str, Any]:
    return {"machine_point": machine_point_json(result.machine_point),
            "disks": [{"disk": d.disk, "point": d.point.id, "mode": d.mode,
                       "reason": d.reason, "bytes_read": d.point.bytes_read,
                       "bytes_stored": d.point.bytes_stored} for d in result.disks],
            "pause_seconds": result.pause_seconds, "seconds": result.seconds,
            "leftovers_cleared": result.leftovers_cleared}


def print_vm_backup(result: VmBackupResult) -> None:
    mp = result.machine_point
    print(f"machine point {mp.id} of {mp.machine} ({mp.consistency}-consistent: {mp.note}); "
          f"guest paused {result.pause_seconds * 1000:.0f} ms, {result.seconds:.2f} s in all")
    if result.leftovers_cleared:
        print("  cleared what an interrupted backup had left in QEMU")
    for d in result.disks:
        print(f"  {d.disk}: point {d.point.id}, {d.mode} ({d.reason}): read "
              f"{human_bytes(d.point.bytes_read)}, stored {human_bytes(d.point.bytes_stored)}")


def print_machine_points(repo: Repository, machine: str, as_json: bool) -> int:
    points = machine_points_of(repo, machine)
    if as_json:
        print_json([machine_point_json(mp) for mp in points])
        return 0
    table(["ID", "CREATED", "CONSISTENCY", "SIZE", "DISKS (VOLUME POINTS)"],
          [[mp.id, when(mp.created), mp.consistency, human_bytes(mp.size),
            ", ".join(f"{m.disk}={m.point.id}" for m in mp.members)] for mp in points])
    return 0
