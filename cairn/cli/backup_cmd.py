"""`cairn backup`: make a new recovery point of a volume from an image file or device."""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import (
    add_json,
    add_repo,
    add_wait,
    human_bytes,
    open_repo,
    print_json,
    progress,
)
from cairn.errors import UsageError
from cairn.ops.backup import backup
from cairn.ops.points import point_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backup", help="back up an image file, a block device or a running "
                                      "QEMU VM as a new point")
    add_repo(p)
    add_wait(p)
    p.add_argument("--volume", help="volume name, e.g. web01-sda (required with SOURCE)")
    p.add_argument("--changed-ranges", type=Path, metavar="FILE",
                   help="JSON list of [offset, length] byte ranges changed since the last "
                        "point (from a change tracker); only those are read")
    p.add_argument("--qemu", type=Path, metavar="SOCKET",
                   help="back up every disk of the running QEMU VM with this QMP socket, "
                        "reading only what its dirty bitmaps mark (a machine point)")
    p.add_argument("--machine", help="machine name for --qemu (default: QEMU's -name, else "
                                     "the socket's file name)")
    p.add_argument("--guest-agent", type=Path, metavar="SOCKET",
                   help="with --qemu: the guest agent's socket, to freeze file systems for "
                        "the instant of the snapshot")
    p.add_argument("--force", action="store_true",
                   help="back up a source that looks wrong: empty, of another size than the "
                        "volume's points, or like no disk (mostly text, an image container)")
    add_json(p)
    p.add_argument("source", type=Path, nargs="?", help="image file or block device")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.qemu is not None:
        return _run_vm(args)
    if args.source is None or args.volume is None:
        raise UsageError("give --volume NAME and a SOURCE (image file or block device), or "
                         "--qemu SOCKET for a running VM")
    with open_repo(args) as repo:
        point, reasons = backup(repo, args.volume, args.source, args.changed_ranges, progress,
                                args.force)
    if args.json:
        print_json({"point": point.id, **point_json(point), "flagged": bool(reasons),
                    "flag_reasons": reasons})
    else:
        print(f"point {point.id} of {point.volume}: read {human_bytes(point.bytes_read)}, "
              f"stored {human_bytes(point.bytes_stored)} in {point.seconds:.2f} s")
        if reasons:
            print(f"WARNING: point {point.id} is flagged as possible ransomware: "
                  f"{'; '.join(reasons)}")
    return 0


def _run_vm(args: argparse.Namespace) -> int:
    if args.source is not None or args.volume is not None:
        raise UsageError("--qemu backs up every disk of the VM: drop --volume and SOURCE")
    from cairn.cli._machines import print_vm_backup, vm_backup_json  # QMP loads only here
    from cairn.ops.vm_backup import VmBackupRequest, backup_vm

    request = VmBackupRequest(args.qemu, args.machine, args.guest_agent)
    with open_repo(args) as repo:
        result = backup_vm(repo, request, progress)
    if args.json:
        print_json(vm_backup_json(result))
    else:
        print_vm_backup(result)
    return 0
