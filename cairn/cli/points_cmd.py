"""`cairn points`: list recovery points in creation order."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_json, add_repo, human_bytes, open_repo, print_json, table, when
from cairn.cli._machines import print_machine_points
from cairn.ops.point_locks import held_json, marks_json
from cairn.ops.points import info_json, list_points
from cairn.store import marks
from cairn.store.catalog import RecoveryPoint
from cairn.store.space import freed_each


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("points", help="list recovery points",
                       description="SIZE: the volume's size; DATA: bytes in the point (zero "
                                   "blocks excluded); ADDED: what its backup stored then; "
                                   "FREES: what deleting it alone would free now (stored "
                                   "bytes no other point holds)")
    add_repo(p)
    p.add_argument("--volume", help="only this volume")
    p.add_argument("--machine", help="machine points of this machine (agentless backups): "
                                     "every disk of one moment together")
    p.add_argument("--deleted", action="store_true",
                   help="list deleted points still restorable (`cairn undelete` them)")
    add_json(p)
    p.set_defaults(handler=run)


def _state(m: marks.Marks) -> str:
    words = []
    if m.locked_until is not None:
        words.append(f"locked until {when(m.locked_until)}")
    if m.flags:
        words.append("FLAGGED: " + "; ".join(m.flags))
    return ", ".join(words) or "-"


def run(args: argparse.Namespace) -> int:
    with open_repo(args, read_only=True) as repo:
        if args.machine:
            return print_machine_points(repo, args.machine, args.json)
        if args.deleted:
            return _run_deleted(args, marks.held_points(repo))
        infos = list_points(repo, args.volume)
        marked = marks.all_marks(repo)
        frees = freed_each(repo, [i.point for i in infos])
    if args.json:
        print_json([{**info_json(i), **marks_json(marked.get(i.point.id, marks.Marks())),
                     "frees": frees[i.point.id]} for i in infos])
        return 0
    table(["ID", "VOLUME", "CREATED", "SIZE", "DATA", "ADDED", "FREES", "BOOT CHECK", "MARKS"],
          [[i.point.id, i.point.volume, when(i.point.created), human_bytes(i.point.size),
            human_bytes(i.point.allocated), human_bytes(i.point.bytes_stored),
            _frees(frees[i.point.id]), i.verification.status if i.verification else "-",
            _state(marked.get(i.point.id, marks.Marks()))] for i in infos])
    return 0


def _frees(n: int | None) -> str:
    return "?" if n is None else human_bytes(n)


def _run_deleted(args: argparse.Namespace,
                 held: list[tuple[RecoveryPoint, marks.Marks]]) -> int:
    if args.volume:
        held = [(p, m) for p, m in held if p.volume == args.volume]
    if args.json:
        print_json(held_json(held))
        return 0
    table(["ID", "VOLUME", "CREATED", "STORED", "DELETED", "RECLAIMED AFTER"],
          [[p.id, p.volume, when(p.created), human_bytes(p.bytes_stored),
            when(m.deleted_at or 0), when(m.purge_after or 0)] for p, m in held])
    return 0
