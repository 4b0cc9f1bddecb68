"""`cairn restore`: write a point out as a raw image (sparse), a device, or qcow2/vmdk/vhdx."""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import add_repo, human_bytes, open_repo
from cairn.cli._common import progress as progress_bar
from cairn.restore.convert import FORMATS, restore_as
from cairn.store.reader import PointReader


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("restore", help="restore a point to an image file or block device")
    add_repo(p)
    p.add_argument("--format", choices=FORMATS, default="raw", help="image format (default raw)")
    p.add_argument("point", help="point id (or unique prefix, or VOLUME@latest)")
    p.add_argument("dest", type=Path, help="destination file or block device")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    point = repo.resolve(args.point)
    with progress_bar(point.size, f"restore {point.id}") as advance:
        restore_as(PointReader(repo, point), args.dest, args.format, advance)
    print(f"restored point {point.id} ({human_bytes(point.size)}) to {args.dest}"
          + ("" if args.format == "raw" else f" as {args.format}"))
    return 0
