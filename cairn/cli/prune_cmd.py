"""`cairn prune`: apply a retention policy to one volume, or to one machine's machine points."""

from __future__ import annotations

import argparse

from cairn.cli._common import (
    add_json,
    add_repo,
    add_wait,
    human_bytes,
    open_repo,
    print_json,
    table,
    when,
)
from cairn.ops.machine_points import list_machine_points, prune_machine
from cairn.ops.retention import prune
from cairn.store.repository import Repository
from cairn.store.retention import Policy

RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_RULE_HELP = {
    "last": "keep the N newest points (N >= 1)",
    **{rule: f"keep the newest point of each of the N latest {period}s (0: every {period}, "
             "forever)"
       for rule, period in (("hourly", "hour"), ("daily", "day"), ("weekly", "week"),
                            ("monthly", "month"), ("yearly", "year"))},
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prune", help="delete the points a retention policy does not keep",
                       description="Each --keep-RULE N keeps the newest point of each of the "
                                   "N latest periods; N=0 keeps every period (forever). "
                                   "Points with clones are always kept.")
    add_repo(p)
    add_wait(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--volume", help="prune the points of this volume")
    which.add_argument("--machine", help="prune machine points: each is kept or removed whole")
    for rule in RULES:
        p.add_argument(f"--keep-{rule}", type=int, metavar="N", dest=rule,
                       help=_RULE_HELP[rule])
    p.add_argument("--dry-run", action="store_true", help="show what would go, delete nothing")
    add_json(p)
    p.set_defaults(handler=run)


def _action(reasons: list[str] | None, dry_run: bool, held_until: float | None) -> str:
    if reasons:
        return f"keep ({', '.join(reasons)})"
    if dry_run:
        return "would delete"
    return f"deleted (restorable until {when(held_until)})" if held_until else "deleted"


def run(args: argparse.Namespace) -> int:
    policy = Policy(**{rule: getattr(args, rule) for rule in RULES})
    with open_repo(args, read_only=args.dry_run) as repo:
        if args.machine:
            return _prune_machine(repo, args, policy)
        result = prune(repo, args.volume, policy, args.dry_run)
    if args.json:
        print_json(result.json())
        return 0
    table(["ID", "CREATED", "ACTION"],
          [[p.id, when(p.created),
            _action(result.plan.reasons.get(p.id), args.dry_run, result.held_until)]
           for p in result.plan.points])
    if result.plan.doomed:
        space = ("an amount not known here" if result.frees_bytes is None
                 else human_bytes(result.frees_bytes))
        print(f"{'would free' if args.dry_run else 'frees'} {space} when reclaimed")
    return 0


def _prune_machine(repo: Repository, args: argparse.Namespace, policy: Policy) -> int:
    points = list_machine_points(repo, args.machine)
    plan = prune_machine(repo, args.machine, policy, args.dry_run)
    if args.json:
        print_json({"machine": args.machine, "dry_run": args.dry_run,
                    "kept": [{"id": mp.id, "rules": plan.kept[mp.id]} for mp in points
                             if mp.id in plan.kept],
                    "deleted": [mp.id for mp in plan.doomed], "held_until": plan.held_until})
        return 0
    table(["MACHINE POINT", "CREATED", "ACTION"],
          [[mp.id, when(mp.created), _action(plan.kept.get(mp.id), args.dry_run,
                                             plan.held_until)]
           for mp in points])
    return 0
