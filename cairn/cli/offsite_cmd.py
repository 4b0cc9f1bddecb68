"""`cairn offsite`: each machine's replication policy to the cloud, and its last outcome."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cairn.cli._appliance import admin_client, admin_command, machine_action
from cairn.cli._common import human_bytes, listing, print_json, report, when
from cairn.errors import CairnError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p, actions = admin_command(sub, "offsite",
                               "offsite policies; `offsite set MACHINE --to s3://...`")
    put = machine_action(actions, "set", "replicate a machine to a cloud repository by policy")
    put.add_argument("--to", required=True, metavar="s3://BUCKET/PREFIX",
                     help="the cloud repository (created on first use)")
    put.add_argument("--s3-endpoint", dest="s3_endpoint", metavar="URL",
                     help="S3 endpoint of --to (default: the appliance's $CAIRN_S3_ENDPOINT)")
    put.add_argument("--every", default="1h", help="how often: 1h (default), 6h, 1d")
    put.add_argument("--send", default="all", choices=("all", "hourly", "daily"),
                     help="every point, or the first of each hour or day")
    put.add_argument("--retention", help='what the cloud keeps, e.g. "daily=90,monthly=0"')
    put.add_argument("--bandwidth", help="cap on bytes sent per second, e.g. 50M")
    put.add_argument("--window", help="start only between these local times, e.g. "
                                      "22:00-06:00")
    put.add_argument("--immutable", metavar="DURATION",
                     help="keep each point sent, and every chunk it needs, under S3 Object "
                          "Lock for DURATION (e.g. 30d); refused unless the bucket enforces "
                          "Object Lock")
    machine_action(actions, "remove", "stop replicating a machine")
    now = machine_action(actions, "run", "replicate a machine now, window or not")
    now.add_argument("--wait", action="store_true", help="wait for the outcome; exit 1 if "
                                                         "it failed")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        if args.action == "set":
            body = {"to": args.to, "endpoint": args.s3_endpoint, "every": args.every,
                    "send": args.send, "retention": args.retention,
                    "bandwidth": args.bandwidth, "window": args.window,
                    "immutable": args.immutable}
            policy = client.json("PUT", f"/api/v1/machines/{args.name}/offsite", json=body)
            for warning in policy.get("warnings", []):
                print(f"cairn: warning: {warning}", file=sys.stderr)
            locked = (f", each point immutable for {policy['immutable']:g}s (S3 Object Lock)"
                      if policy["immutable"] else "")
            return report(args.json, policy,
                          f"{args.name}: replicated to {policy['target']} every "
                          f"{policy['every']:g}s ({policy['send']} points){locked}, first run "
                          f"at {when(policy['next_run'])}")
        if args.action == "remove":
            client.request("DELETE", f"/api/v1/machines/{args.name}/offsite")
            return report(args.json, {"machine": args.name, "offsite": False},
                          f"{args.name} is no longer replicated offsite; the cloud keeps its "
                          "points")
        if args.action == "run":
            return _run_now(client, args)
        policies = client.json("GET", "/api/v1/offsite")
    return listing(args.json, policies, ["MACHINE", "TO", "EVERY", "SEND", "CLOUD RETENTION",
                                         "WINDOW", "LAST OK", "STATE"], _row)


def _row(p: dict[str, Any]) -> list[str]:
    return [p["machine"], p["target"], f"{p['every']:g}s", p["send"], p["retention"] or "-",
            p["window"] or "-", when(p["last_ok"]) if p["last_ok"] else "never",
            f"FAILED: {p['last_error']}" if p["last_error"] else _last(p["last_report"])]


def _last(report: dict[str, Any] | None) -> str:
    if not report:
        return "-"
    return (f"sent {report['points_sent']} point(s), {human_bytes(report['bytes_sent'])}; "
            f"cloud deleted {report['cloud_deleted']}")


def _run_now(client: Any, args: argparse.Namespace) -> int:
    asked = client.json("POST", f"/api/v1/machines/{args.name}/offsite/run")["asked"]
    if not args.wait:
        return report(args.json, {"machine": args.name, "queued": True, "asked": asked},
                      f"{args.name}: offsite replication queued")
    while True:
        [policy] = [p for p in client.json("GET", "/api/v1/offsite")
                    if p["machine"] == args.name]
        if policy["last_run"] and policy["last_run"] >= asked:
            break
        time.sleep(0.5)
    if args.json:
        print_json(policy)
    elif policy["last_error"]:
        print(f"{args.name}: offsite replication FAILED: {policy['last_error']}")
    else:
        print(f"{args.name}: {_last(policy['last_report'])}")
    if policy["last_error"]:
        raise CairnError(f"offsite replication of {args.name} failed: {policy['last_error']}")
    return 0
