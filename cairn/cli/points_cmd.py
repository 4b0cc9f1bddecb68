"""`cairn points`: list recovery points in creation order."""

from __future__ import annotations

import argparse

from cairn.cli._common import (
    add_json,
    add_repo,
    human_bytes,
    open_repo,
    point_json,
    print_json,
    table,
    when,
)
from cairn.cli._machines import print_machine_points
from cairn.store import marks
from cairn.store.catalog import RecoveryPoint, Verification


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("points", help="list recovery points")
    add_repo(p)
    p.add_argument("--volume", help="only this volume")
    p.add_argument("--machine", help="machine points of this machine (agentless backups): "
                                     "every disk of one moment together")
    p.add_argument("--deleted", action="store_true",
                   help="list deleted points still restorable (`cairn undelete` them)")
    add_json(p)
    p.set_defaults(handler=run)


def _verification(v: Verification | None) -> dict[str, object] | None:
    if v is None:
        return None
    return {"status": v.status, "reason": v.reason, "ocr_text": v.ocr_text,
            "screenshot": v.screenshot, "seconds": v.seconds, "at_unix": v.at}


def marks_json(m: marks.Marks) -> dict[str, object]:
    return {"locked_until": m.locked_until, "flagged": bool(m.flags),
            "flag_reasons": list(m.flags)}


def _state(m: marks.Marks) -> str:
    words = []
    if m.locked_until is not None:
        words.append(f"locked until {when(m.locked_until)}")
    if m.flags:
        words.append("FLAGGED: " + "; ".join(m.flags))
    return ", ".join(words) or "-"


def run(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    if args.machine:
        return print_machine_points(repo, args.machine, args.json)
    if args.deleted:
        return _run_deleted(args, marks.held_points(repo))
    volume_id = repo.volume(args.volume).id if args.volume else None
    points = marks.live_points(repo, volume_id)
    checks = repo.catalog.verifications()
    marked = marks.all_marks(repo)
    if args.json:
        print_json([{**point_json(p), "verification": _verification(checks.get(p.id)),
                     **marks_json(marked.get(p.id, marks.Marks()))} for p in points])
        return 0
    table(["ID", "VOLUME", "CREATED", "SIZE", "DATA", "STORED", "BOOT CHECK", "MARKS"],
          [[p.id, p.volume, when(p.created), human_bytes(p.size), human_bytes(p.allocated),
            human_bytes(p.bytes_stored), checks[p.id].status if p.id in checks else "-",
            _state(marked.get(p.id, marks.Marks()))] for p in points])
    return 0


def _run_deleted(args: argparse.Namespace,
                 held: list[tuple[RecoveryPoint, marks.Marks]]) -> int:
    if args.volume:
        held = [(p, m) for p, m in held if p.volume == args.volume]
    if args.json:
        print_json([{**point_json(p), "deleted_at": m.deleted_at,
                     "purge_after": m.purge_after} for p, m in held])
        return 0
    table(["ID", "VOLUME", "CREATED", "STORED", "DELETED", "RECLAIMED AFTER"],
          [[p.id, p.volume, when(p.created), human_bytes(p.bytes_stored),
            when(m.deleted_at or 0), when(m.purge_after or 0)] for p, m in held])
    return 0
