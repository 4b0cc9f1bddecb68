"""`cairn undelete`: bring back points deleted within the deletion window."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_repo, open_repo
from cairn.store import marks


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("undelete", help="bring back deleted points (`cairn points --deleted`)")
    add_repo(p)
    p.add_argument("points", nargs="+", metavar="POINT")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    points = [repo.resolve(ref) for ref in args.points]
    for point in points:
        marks.undelete(repo, point)
    print(f"brought back {len(points)} point(s)")
    return 0
