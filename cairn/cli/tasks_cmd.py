"""`cairn tasks`: the long operations started on the appliance from its API or console (a
cloud prune or its preview, a conversion to packs, a repack, a boot check), as the
console's jobs page lists them; `tasks show ID --wait` follows one to its end."""

from __future__ import annotations

import argparse
import time
from typing import Any

from cairn.cli._appliance import admin_client, admin_command
from cairn.cli._common import print_json, table, when

HEADERS = ["TASK", "KIND", "OF", "BY", "STARTED", "STATE", "PROGRESS", "RESULT"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p, actions = admin_command(sub, "tasks", "show the appliance's space tasks and boot "
                                             "checks started from its API or console")
    show = actions.add_parser("show", help="one task, with its whole result")
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument("--wait", action="store_true",
                      help="wait until it ends; exit 1 if it failed")
    p.set_defaults(handler=run)


def _progress(t: dict[str, Any]) -> str:
    done = t["progress"]
    return _counts(done) if done["total"] else "-"


def _counts(phase: dict[str, Any]) -> str:
    """``45%`` of bytes, ``3/7`` of things (volumes, packs)."""
    if phase.get("unit", "bytes") == "bytes":
        return f"{100 * phase['done'] // max(phase['total'], 1)}%"
    return f"{phase['done']}/{phase['total']}"


def _phases(t: dict[str, Any]) -> None:
    """The steps a task went through, one line each, under its row."""
    for phase in t.get("phases", []):
        counts = f" {_counts(phase)}" if phase["total"] else ""
        print(f"  {phase['step']}{counts}")


def _row(t: dict[str, Any], width: int = 80) -> list[str]:
    return [str(t["id"]), t["kind"], t["subject"], t["user"], when(t["started"]), t["state"],
            _progress(t), t["result"][:width]]


def run(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        if args.action != "show":
            tasks = client.json("GET", "/api/v1/tasks")
            if args.json:
                print_json(tasks)
            else:
                table(HEADERS, [_row(t) for t in tasks])
            return 0
        task = client.json("GET", f"/api/v1/tasks/{args.id}")
        while args.wait and task["state"] == "running":
            time.sleep(0.5)
            task = client.json("GET", f"/api/v1/tasks/{args.id}")
        if args.json:
            print_json(task)
        else:
            table(HEADERS, [_row(task, 10_000)])
            _phases(task)
        return 1 if task["state"] == "failed" else 0
