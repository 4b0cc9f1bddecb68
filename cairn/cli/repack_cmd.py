"""`cairn repack`: gather each volume's newest point into packs of its own (`store.repack`)."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_json, add_repo, human_bytes, open_repo, print_json, table
from cairn.ops.repack import repack_line, repack_repository


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("repack", help="gather the newest points' scattered blocks (runs "
                                      "beside backups; the appliance does it by itself)",
                       description="Copies the chunks each volume's newest point reads in "
                                   "short or sparse reads into new packs, so it restores as "
                                   "fast as the oldest; chunks keep their names and the old "
                                   "copies' space is given back.")
    add_repo(p)
    p.add_argument("--volume", action="append", help="only this volume (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="say what would move, move nothing")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        result = repack_repository(repo, args.volume, args.dry_run)
    if args.json:
        print_json(result.to_json())
        return 0
    if result.skipped:
        print(repack_line(result, args.dry_run))
        return 0
    table(["VOLUME", "POINT", "READS", "SPARSE", "READS AFTER", "MOVED"],
          [[p.volume, p.point, str(p.reads_before), str(p.sparse_before),
            str(p.reads_after), human_bytes(p.moved_bytes)] for p in result.points])
    print(repack_line(result, args.dry_run))
    return 0
