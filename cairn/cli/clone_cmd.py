"""`cairn clone`, `cairn clones`, `cairn clone-rm`: writable copies of points."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_json, add_repo, open_repo, print_json, table, when
from cairn.ops.machine_points import clone_machine_point
from cairn.ops.machine_points import resolve as resolve_machine_point
from cairn.store.clones import create_clone, list_clones, remove_clone


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("clone", help="make a writable clone of a point (constant time)")
    add_repo(p)
    p.add_argument("point", help="point id (or unique prefix, or VOLUME@latest); a machine "
                                 "point clones every disk, as NAME.DISK")
    p.add_argument("--name", help="clone name (default: made from the point)")
    p.set_defaults(handler=run_clone)

    p = sub.add_parser("clones", help="list clones")
    add_repo(p)
    add_json(p)
    p.set_defaults(handler=run_list)

    p = sub.add_parser("clone-rm", help="remove a clone and what only it held")
    add_repo(p)
    p.add_argument("clone", nargs="+", help="clone name")
    p.set_defaults(handler=run_remove)


def run_clone(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    machine_point = resolve_machine_point(repo, args.point)
    if machine_point is not None:
        for made in clone_machine_point(repo, machine_point, args.name):
            print(f"clone {made.name} of point {made.point_id}")
        return 0
    clone = create_clone(repo, repo.resolve(args.point), args.name)
    print(f"clone {clone.name} of point {clone.point_id}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    clones = list_clones(open_repo(args))
    if args.json:
        print_json([{"name": c.name, "point": c.point_id, "created_unix": c.created}
                    for c in clones])
        return 0
    table(["NAME", "POINT", "CREATED"], [[c.name, c.point_id, when(c.created)] for c in clones])
    return 0


def run_remove(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    for name in args.clone:
        remove_clone(repo, name)
        print(f"removed clone {name}")
    return 0
