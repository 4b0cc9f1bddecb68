"""`cairn restore`: write a point out as a raw image (sparse), a device, or qcow2/vmdk/vhdx."""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import add_repo, human_bytes, open_repo
from cairn.cli._common import progress as progress_bar
from cairn.ops.machine_points import resolve as resolve_machine_point
from cairn.ops.machine_points import restore_machine_point
from cairn.restore.convert import FORMATS, restore_as
from cairn.restore.writer import describe_lost
from cairn.store.reader import PointReader


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("restore", help="restore a point to an image file or block device")
    add_repo(p)
    p.add_argument("--format", choices=FORMATS, default="raw", help="image format (default raw)")
    p.add_argument("--ignore-damage", action="store_true",
                   help="restore a damaged point anyway: unreadable blocks become zeros "
                        "and are listed")
    p.add_argument("point", help="point id (or unique prefix, or VOLUME@latest); a machine "
                                 "point (or MACHINE@latest) restores every disk")
    p.add_argument("dest", type=Path, help="destination file or block device; for a machine "
                                           "point a folder, one image per disk")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    machine_point = resolve_machine_point(repo, args.point)
    if machine_point is not None:
        with progress_bar(machine_point.size, f"restore {machine_point.id}") as advance:
            files = restore_machine_point(repo, machine_point, args.dest, args.format, advance)
        print(f"restored machine point {machine_point.id} of {machine_point.machine}: "
              + ", ".join(map(str, files)))
        return 0
    point = repo.resolve(args.point)
    with progress_bar(point.size, f"restore {point.id}") as advance:
        lost = restore_as(PointReader(repo, point), args.dest, args.format, advance,
                          args.ignore_damage)
    if lost:
        print(f"warning: point {point.id} is damaged: "
              f"{describe_lost(lost, repo.block_size)} were written as zeros")
    print(f"restored point {point.id} ({human_bytes(point.size)}) to {args.dest}"
          + ("" if args.format == "raw" else f" as {args.format}"))
    return 0
