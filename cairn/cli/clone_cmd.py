"""`cairn clone`, `cairn clones`, `cairn clone-rm`: writable copies of points."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_json, add_point, add_repo, open_repo, print_json, table, when
from cairn.ops.clones import clone, clone_json, clones, remove


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("clone", help="make a writable clone of a point (constant time)")
    add_repo(p)
    add_point(p, more="; a machine point clones every disk, as NAME.DISK")
    p.add_argument("--name", help="clone name (default: made from the point)")
    add_json(p)
    p.set_defaults(handler=run_clone)

    p = sub.add_parser("clones", help="list clones")
    add_repo(p)
    add_json(p)
    p.set_defaults(handler=run_list)

    p = sub.add_parser("clone-rm", help="remove a clone and what only it held")
    add_repo(p)
    p.add_argument("clone", nargs="+", help="clone name")
    add_json(p)
    p.set_defaults(handler=run_remove)


def run_clone(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        made = clone(repo, args.point, args.name)
    if args.json:
        print_json([clone_json(c) for c in made])
        return 0
    for c in made:
        print(f"clone {c.name} of point {c.point_id}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    with open_repo(args, read_only=True) as repo:
        found = clones(repo)
    if args.json:
        print_json([clone_json(c) for c in found])
        return 0
    table(["NAME", "POINT", "CREATED"], [[c.name, c.point_id, when(c.created)] for c in found])
    return 0


def run_remove(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        removed = list(remove(repo, args.clone))
    if args.json:
        print_json({"removed": removed})
        return 0
    for name in removed:
        print(f"removed clone {name}")
    return 0
