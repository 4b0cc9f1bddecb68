"""`cairn delete`: delete points, held restorable for the deletion window unless --now."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_repo, add_wait, open_repo, when
from cairn.ops.machine_points import delete_machine_points
from cairn.ops.machine_points import resolve as resolve_machine_point
from cairn.store import marks
from cairn.store.delete import delete_points, purge_expired


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("delete", help="delete recovery points (restorable for a while)")
    add_repo(p)
    add_wait(p)
    p.add_argument("points", nargs="+", metavar="POINT",
                   help="point ids; a machine point goes whole, with every disk's point")
    p.add_argument("--now", action="store_true",
                   help="free their space at once instead of holding them for the deletion "
                        "window ($CAIRN_DELETE_WINDOW, default 3d)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    targets = [(ref, resolve_machine_point(repo, ref)) for ref in args.points]
    machine_points = [mp for _, mp in targets if mp is not None]
    points = [repo.resolve(ref) for ref, mp in targets if mp is None]
    what = f"{len(points)} point(s)" + (f" and {len(machine_points)} machine point(s)"
                                        if machine_points else "")
    if args.now:
        freed = delete_points(repo, points) + delete_machine_points(repo, machine_points)
        print(f"deleted {what}, freed {freed} chunk(s)")
        return 0
    until = marks.hold(repo, points + [m.point for mp in machine_points for m in mp.members])
    purge_expired(repo)
    print(f"deleted {what}: restorable with `cairn undelete` until {when(until)}, then "
          "reclaimed")
    return 0
