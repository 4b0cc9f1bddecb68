"""`cairn points`: list recovery points in creation order."""

from __future__ import annotations

import argparse

from cairn.cli._common import (
    add_json,
    add_repo,
    human_bytes,
    open_repo,
    point_json,
    print_json,
    table,
    when,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("points", help="list recovery points")
    add_repo(p)
    p.add_argument("--volume", help="only this volume")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    volume_id = repo.volume(args.volume).id if args.volume else None
    points = repo.catalog.points(volume_id)
    if args.json:
        print_json([point_json(p) for p in points])
        return 0
    table(["ID", "VOLUME", "CREATED", "SIZE", "DATA", "STORED"],
          [[p.id, p.volume, when(p.created), human_bytes(p.size), human_bytes(p.allocated),
            human_bytes(p.bytes_stored)] for p in points])
    return 0
