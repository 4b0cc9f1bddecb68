"""`cairn prune`: apply a retention policy to one volume."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_json, add_repo, add_wait, open_repo, print_json, table, when
from cairn.ops.machine_points import list_machine_points, prune_machine
from cairn.store import marks
from cairn.store.clones import list_clones
from cairn.store.delete import delete_points, purge_expired
from cairn.store.repository import Repository
from cairn.store.retention import Policy, select

RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prune", help="delete the points a retention policy does not keep",
                       description="Each --keep-RULE N keeps the newest point of each of the "
                                   "N latest periods; N=0 keeps every period (forever).")
    add_repo(p)
    add_wait(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--volume")
    which.add_argument("--machine", help="prune machine points: each is kept or removed whole")
    for rule in RULES:
        p.add_argument(f"--keep-{rule}", type=int, metavar="N", dest=rule)
    p.add_argument("--dry-run", action="store_true", help="show what would go, delete nothing")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    policy = Policy(**{rule: getattr(args, rule) for rule in RULES})
    if args.machine:
        return _prune_machine(repo, args, policy)
    points = marks.live_points(repo, repo.volume(args.volume).id)
    keep = select(points, policy)
    for p in points:
        if list_clones(repo, p.id):
            keep.setdefault(p.id, []).append("has a clone")
    for point_id, reason in marks.keep_reasons(repo, points).items():
        keep.setdefault(point_id, []).append(reason)
    doomed = [p for p in points if p.id not in keep]
    if not args.dry_run:
        delete_points(repo, doomed)
        purge_expired(repo)
    if args.json:
        print_json({"dry_run": args.dry_run,
                    "kept": [{"id": p.id, "rules": keep[p.id]} for p in points if p.id in keep],
                    "deleted": [p.id for p in doomed]})
        return 0
    table(["ID", "CREATED", "ACTION"],
          [[p.id, when(p.created),
            f"keep ({', '.join(keep[p.id])})" if p.id in keep
            else ("would delete" if args.dry_run else "deleted")] for p in points])
    return 0


def _prune_machine(repo: Repository, args: argparse.Namespace, policy: Policy) -> int:
    points = list_machine_points(repo, args.machine)
    plan = prune_machine(repo, args.machine, policy, args.dry_run)
    if args.json:
        print_json({"dry_run": args.dry_run,
                    "kept": [{"id": mp.id, "rules": plan.kept[mp.id]} for mp in points
                             if mp.id in plan.kept],
                    "deleted": [mp.id for mp in plan.doomed]})
        return 0
    table(["MACHINE POINT", "CREATED", "ACTION"],
          [[mp.id, when(mp.created),
            f"keep ({', '.join(plan.kept[mp.id])})" if mp.id in plan.kept
            else ("would delete" if args.dry_run else "deleted")] for mp in points])
    return 0
