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
from cairn.store.catalog import Verification


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("points", help="list recovery points")
    add_repo(p)
    p.add_argument("--volume", help="only this volume")
    p.add_argument("--machine", help="machine points of this machine (agentless backups): "
                                     "every disk of one moment together")
    add_json(p)
    p.set_defaults(handler=run)


def _verification(v: Verification | None) -> dict[str, object] | None:
    if v is None:
        return None
    return {"status": v.status, "reason": v.reason, "ocr_text": v.ocr_text,
            "screenshot": v.screenshot, "seconds": v.seconds, "at_unix": v.at}


def run(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    if args.machine:
        return print_machine_points(repo, args.machine, args.json)
    volume_id = repo.volume(args.volume).id if args.volume else None
    points = repo.catalog.points(volume_id)
    checks = repo.catalog.verifications()
    if args.json:
        print_json([{**point_json(p), "verification": _verification(checks.get(p.id))}
                    for p in points])
        return 0
    table(["ID", "VOLUME", "CREATED", "SIZE", "DATA", "STORED", "BOOT CHECK"],
          [[p.id, p.volume, when(p.created), human_bytes(p.size), human_bytes(p.allocated),
            human_bytes(p.bytes_stored),
            checks[p.id].status if p.id in checks else "-"] for p in points])
    return 0
