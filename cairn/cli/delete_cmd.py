"""`cairn delete`: delete points; only what they alone held is freed."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_repo, open_repo
from cairn.store.delete import delete_points


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("delete", help="delete recovery points")
    add_repo(p)
    p.add_argument("points", nargs="+", metavar="POINT", help="point ids")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    points = [repo.resolve(ref) for ref in args.points]
    freed = delete_points(repo, points)
    print(f"deleted {len(points)} point(s), freed {freed} chunk(s)")
    return 0
