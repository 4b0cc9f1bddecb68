"""`cairn undelete`: bring back points deleted within the deletion window."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_json, add_repo, open_repo, report
from cairn.ops.points import undelete


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("undelete", help="bring back deleted points (`cairn points --deleted`)")
    add_repo(p)
    p.add_argument("points", nargs="+", metavar="POINT",
                   help="point ids; a machine point comes back whole, with every disk's point")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        brought = undelete(repo, args.points)
    return report(args.json, {"undeleted": brought}, f"brought back {len(brought)} point(s)")
