"""`cairn restore`: write a point out as a raw image (sparse), a device, or qcow2/vmdk/vhdx."""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import (
    add_json,
    add_point,
    add_repo,
    human_bytes,
    open_repo,
    print_json,
    progress,
)
from cairn.ops.restore import FORMATS, refuse_overwrite, restore


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("restore", help="restore a point to an image file or block device")
    add_repo(p)
    p.add_argument("--format", choices=FORMATS, default="raw", help="image format (default raw)")
    p.add_argument("--ignore-damage", action="store_true",
                   help="restore a damaged point anyway: unreadable blocks become zeros "
                        "and are listed")
    add_point(p, more="; a machine point (or MACHINE@latest) restores every disk")
    p.add_argument("dest", type=Path, help="destination file or block device; for a machine "
                                           "point a folder, one image per disk")
    p.add_argument("--force", action="store_true",
                   help="overwrite an existing file (or write into a non-empty folder)")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if not args.force:
        refuse_overwrite(args.dest)
    with open_repo(args, read_only=True) as repo:
        result = restore(repo, args.point, args.dest, args.format, progress,
                         args.ignore_damage)
    if args.json:
        print_json({"id": result.id, "machine": result.machine, "size": result.size,
                    "files": [str(f) for f in result.files], "format": result.format,
                    "lost": result.lost or None})
        return 0
    if result.machine is not None:
        print(f"restored machine point {result.id} of {result.machine}: "
              + ", ".join(map(str, result.files)))
        return 0
    if result.lost:
        print(f"warning: point {result.id} is damaged: {result.lost} were written as zeros")
    print(f"restored point {result.id} ({human_bytes(result.size)}) to {args.dest}"
          + ("" if result.format == "raw" else f" as {result.format}"))
    return 0
