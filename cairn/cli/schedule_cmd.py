"""`cairn schedule`: when each machine is backed up and which points retention keeps."""

from __future__ import annotations

import argparse
from typing import Any

from cairn.cli._appliance import add_appliance, admin_client
from cairn.cli._common import add_json, print_json, table, when


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("schedule", help="show, set or remove backup schedules")
    add_appliance(p)
    add_json(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    put = actions.add_parser("set", help="back a machine up every N minutes or by cron")
    put.add_argument("name", metavar="MACHINE")
    when_ = put.add_mutually_exclusive_group(required=True)
    when_.add_argument("--every", help="interval: 5m (the minimum), 1h, 1d")
    when_.add_argument("--cron", help="five-field cron expression, e.g. '*/15 * * * *'")
    put.add_argument("--retention", help='after each backup keep e.g. '
                                         '"hourly=24,daily=14,weekly=8,monthly=12"')
    remove = actions.add_parser("remove", help="stop scheduling a machine")
    remove.add_argument("name", metavar="MACHINE")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        if args.action == "set":
            body: dict[str, Any] = {"every": args.every, "cron": args.cron,
                                    "retention": args.retention}
            machine = client.json("PUT", f"/api/v1/machines/{args.name}/schedule", json=body)
            s = machine["schedule"]
            if args.json:
                print_json(machine)
            else:
                print(f"{args.name}: next backup at {when(s['next_run'])}")
            return 0
        if args.action == "remove":
            client.request("DELETE", f"/api/v1/machines/{args.name}/schedule")
            print(f"{args.name} is no longer scheduled")
            return 0
        schedules = client.json("GET", "/api/v1/schedules")
    if args.json:
        print_json(schedules)
        return 0
    table(["MACHINE", "WHEN", "RETENTION", "NEXT RUN"],
          [[s["machine"], f"every {s['every']:g}s" if s["every"] else f"cron {s['cron']}",
            s["retention"] or "-", when(s["next_run"])] for s in schedules])
    return 0
