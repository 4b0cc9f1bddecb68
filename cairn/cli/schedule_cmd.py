"""`cairn schedule`: when each machine is backed up and which points retention keeps."""

from __future__ import annotations

import argparse
from typing import Any

from cairn.appliance.verification import check as check_verification
from cairn.cli._appliance import admin_client, admin_command, machine_action
from cairn.cli._common import listing, report, when


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p, actions = admin_command(sub, "schedule", "show, set or remove backup schedules")
    put = machine_action(actions, "set", "back a machine up every N minutes or by cron")
    when_ = put.add_mutually_exclusive_group(required=True)
    when_.add_argument("--every", help="interval: 5m (the minimum), 1h, 1d")
    when_.add_argument("--cron", help="five-field cron expression, e.g. '*/15 * * * *'")
    put.add_argument("--retention", help='after each backup keep e.g. '
                                         '"hourly=24,daily=14,weekly=8,monthly=12"')
    put.add_argument("--screenshot", choices=("each", "daily", "weekly", "off"),
                     help="boot and read each new point, the newest daily or weekly")
    put.add_argument("--expect-text", help="text that means booted (default: a login, "
                                           "sign-in or lock screen)")
    put.add_argument("--verify-data", type=int, metavar="N",
                     help="re-read and hash-check all stored data every N days (1/N nightly)")
    machine_action(actions, "remove", "stop scheduling a machine")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        if args.action == "set":
            body: dict[str, Any] = {"every": args.every, "cron": args.cron,
                                    "retention": args.retention}
            verification = (args.screenshot, args.expect_text, args.verify_data) != (
                None, None, None)
            if verification:  # checked before anything changes
                check_verification(args.screenshot or "off", args.verify_data)
            machine = client.json("PUT", f"/api/v1/machines/{args.name}/schedule", json=body)
            if verification:
                machine["verification"] = client.json(
                    "PUT", f"/api/v1/machines/{args.name}/verification",
                    json={"screenshot": args.screenshot or "off",
                          "expect_text": args.expect_text, "verify_data": args.verify_data})
            return report(args.json, machine, f"{args.name}: next backup at "
                                              f"{when(machine['schedule']['next_run'])}")
        if args.action == "remove":
            client.request("DELETE", f"/api/v1/machines/{args.name}/schedule")
            return report(args.json, {"machine": args.name, "scheduled": False},
                          f"{args.name} is no longer scheduled")
        schedules = client.json("GET", "/api/v1/schedules")
    return listing(args.json, schedules, ["MACHINE", "WHEN", "RETENTION", "NEXT RUN"],
                   lambda s: [s["machine"], f"every {s['every']:g}s" if s["every"] else
                              f"cron {s['cron']}", s["retention"] or "-", when(s["next_run"])])
