"""`cairn delete`: delete points, held restorable for the deletion window unless --now."""

from __future__ import annotations

import argparse

from cairn.cli._common import (
    add_json,
    add_repo,
    add_wait,
    human_bytes,
    open_repo,
    print_json,
    when,
)
from cairn.ops.points import delete


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("delete", help="delete recovery points (restorable for a while)")
    add_repo(p)
    add_wait(p)
    p.add_argument("points", nargs="+", metavar="POINT",
                   help="point ids; a machine point goes whole, with every disk's point")
    p.add_argument("--now", action="store_true",
                   help="free their space at once instead of holding them for the deletion "
                        "window ($CAIRN_DELETE_WINDOW, default 3d)")
    p.add_argument("--dry-run", action="store_true",
                   help="say what would be deleted and the space it would free; change "
                        "nothing")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args, read_only=args.dry_run) as repo:
        result = delete(repo, args.points, now=args.now, dry_run=args.dry_run)
    until, frees = result.held_until, result.frees_bytes
    if args.json:
        print_json({"deleted": result.deleted, "machine_points": result.machine_points,
                    "dry_run": args.dry_run, "now": args.now, "frees_bytes": frees,
                    "held_until": until})
        return 0
    what = f"{len(result.deleted)} point(s)" + (
        f" and {len(result.machine_points)} machine point(s)" if result.machine_points else "")
    space = "an amount not known here" if frees is None else human_bytes(frees)
    if args.dry_run:
        print(f"would delete {what}, freeing {space}"
              + ("" if args.now else " once the deletion window ends (at once with --now)"))
    elif until is None:
        print(f"deleted {what}, freed {space}")
    else:
        print(f"deleted {what}: restorable with `cairn undelete` until {when(until)}, then "
              f"reclaimed, freeing {space}")
    return 0
