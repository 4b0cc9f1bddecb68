"""`cairn restore-files`: copy files and folders out of a point into a host directory.

Owners, modes, times, symlinks and hard links are kept (owners only when run as root);
nothing is ever written outside ``--to`` (see `cairn.insights.extract`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import add_json, add_repo, human_bytes, open_repo, print_json
from cairn.cli._insights import PATH_SYNTAX, add_point, point_disk
from cairn.insights import paths
from cairn.insights.extract import Extracted, extract


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "restore-files", help="restore files and folders from a point into a directory",
        description="Copy each PATH of POINT into DIR as DIR/<its name> (the root's contents "
                    "go straight into DIR), keeping modes, owners, times, symlinks and hard "
                    "links. Refuses any path that would land outside DIR. " + PATH_SYNTAX)
    add_repo(p)
    add_point(p)
    p.add_argument("paths", nargs="+", metavar="PATH", help="[PART:]/path to restore")
    p.add_argument("--to", required=True, type=Path, metavar="DIR",
                   help="directory to restore into (created if missing)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files that already exist in DIR (default: refuse)")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    total = Extracted()
    links: dict[int, dict[int, list[str]]] = {}  # per file system: a hard link stays one
    with open_repo(args, read_only=True) as repo, point_disk(repo, args.point) as (point, volumes):
        for spec in args.paths:
            location = paths.parse(spec)
            _, fs = paths.select(volumes, location)
            done = extract(fs, location.path, args.to, overwrite=args.overwrite,
                           links=links.setdefault(id(fs), {}))
            for name in vars(total):
                setattr(total, name, getattr(total, name) + getattr(done, name))
    if args.json:
        print_json({"point": point.id, "to": str(args.to), **vars(total)})
        return 0
    skipped = f", skipped {total.skipped} special files" if total.skipped else ""
    print(f"restored {total.files} files ({human_bytes(total.bytes)}), {total.dirs} directories, "
          f"{total.symlinks} symlinks, {total.hardlinks} hard links from point {point.id} to "
          f"{args.to}{skipped}")
    return 0
