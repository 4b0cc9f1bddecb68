"""What the commands about machine points share: their JSON and their one-line summary."""

from __future__ import annotations

from typing import Any

from cairn.cli._common import human_bytes, point_json
from cairn.ops.vm_backup import VmBackupResult
from cairn.store.machine_points import MachinePoint


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
