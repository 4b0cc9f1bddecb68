"""`cairn rollback`: put a point back onto a disk or image, writing only the blocks that differ."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from cairn.cli._common import add_json, add_repo, human_bytes, open_repo, print_json
from cairn.restore.rollback import rollback
from cairn.store.reader import PointReader


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollback", help="roll a disk or image back to a point, writing only "
                                        "what differs")
    add_repo(p)
    add_json(p)
    p.add_argument("point", help="point id (or unique prefix, or VOLUME@latest)")
    p.add_argument("--to", type=Path, required=True, metavar="DEVICE|IMAGE",
                   help="the disk or image file to roll back (unmounted, at least as large)")
    p.add_argument("--changed-ranges", type=Path, metavar="FILE",
                   help="JSON list of [offset, length] byte ranges written on the target "
                        "since the point (from a change tracker): only those are read and "
                        "compared; a change the tracker missed stays")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args, read_only=True) as repo:  # it writes the target, never the repository
        point = repo.resolve(args.point)
        result = rollback(PointReader(repo, point), args.to, args.changed_ranges)
    if args.json:
        print_json(asdict(result))
    else:
        print(f"rolled {args.to} back to point {point.id}: {result.blocks_differing} blocks "
              f"differed, {human_bytes(result.bytes_read)} read and "
              f"{human_bytes(result.bytes_written)} written of {human_bytes(result.size)}, "
              f"in {result.seconds:.1f} s")
    return 0
