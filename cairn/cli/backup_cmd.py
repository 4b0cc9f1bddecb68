"""`cairn backup`: make a new recovery point of a volume from an image file or device."""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import add_json, add_repo, human_bytes, open_repo, point_json, print_json
from cairn.cli._common import progress as progress_bar
from cairn.sources.image import ImageSource, load_changed_ranges
from cairn.store.ingest import Ingest


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("backup", help="back up an image file or block device as a new point")
    add_repo(p)
    p.add_argument("--volume", required=True, help="volume name, e.g. web01-sda")
    p.add_argument("--changed-ranges", type=Path, metavar="FILE",
                   help="JSON list of [offset, length] byte ranges changed since the last "
                        "point (from a change tracker); only those are read")
    add_json(p)
    p.add_argument("source", type=Path, help="image file or block device")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with ImageSource(args.source) as source:
        repo = open_repo(args)
        ranges = (load_changed_ranges(args.changed_ranges, source.size)
                  if args.changed_ranges else None)
        total = sum(n for _, n in ranges) if ranges is not None else source.size
        with progress_bar(total, f"backup {args.volume}") as advance:
            point = Ingest(repo, args.volume, source, progress=advance).run(ranges)
    if args.json:
        print_json({"point": point.id, **point_json(point)})
    else:
        print(f"point {point.id} of {point.volume}: read {human_bytes(point.bytes_read)}, "
              f"stored {human_bytes(point.bytes_stored)} in {point.seconds:.2f} s")
    return 0
