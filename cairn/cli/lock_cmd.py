"""`cairn lock` / `cairn unlock`: promise that points stay until a date (`ops.point_locks`,
as ``POST /api/v1/points/{ref}/lock``)."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_json, add_repo, open_repo, print_json, report, when
from cairn.ops.point_locks import lock, unlock


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lock", help="lock points: nothing deletes or prunes them before DATE")
    add_repo(p)
    p.add_argument("points", nargs="+", metavar="POINT",
                   help="point ids; a machine point: every disk's point")
    p.add_argument("--until", required=True, metavar="DATE",
                   help="YYYY-MM-DD (locked through that day, UTC), YYYY-MM-DDTHH:MM, or a "
                        "duration from now such as 30d")
    add_json(p)
    p.set_defaults(handler=run_lock)
    p = sub.add_parser("unlock", help="lift the locks of points whose date has passed")
    add_repo(p)
    p.add_argument("points", nargs="+", metavar="POINT",
                   help="point ids; a machine point: every disk's point")
    add_json(p)
    p.set_defaults(handler=run_unlock)


def run_lock(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        result = lock(repo, args.points, args.until)
    if args.json:
        print_json(result.json())
        return 0
    print(f"locked {len(result.locked)} point(s) until {when(result.locked_until)}")
    return 0


def run_unlock(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        unlocked = unlock(repo, args.points)
    return report(args.json, {"unlocked": unlocked}, f"unlocked {len(unlocked)} point(s)")
