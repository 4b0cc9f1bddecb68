"""`cairn exports`: diskless restore served by the appliance (`cairn.ops.exports`): start an
NBD export of a point or a clone that outlives this command, list them, hand out a psk
export's key, stop one (keeping what clients wrote to a clone as a point).

The same ``/api/v1/exports`` the console's exports page calls; `cairn export` is the
foreground twin that serves until Ctrl-C."""

from __future__ import annotations

import argparse
from typing import Any

from cairn.agent.client import ApplianceClient
from cairn.cli._appliance import admin_client, admin_command
from cairn.cli._common import print_json, table, when

HEADERS = ["EXPORT", "TARGET", "STATE", "TLS", "MODE", "STARTED", "URL"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p, actions = admin_command(sub, "exports", "NBD exports the appliance serves (diskless "
                                               "restore); with no action, list them")
    start = actions.add_parser("start", help="serve a point or a clone over NBD with TLS")
    start.add_argument("target", help="point id, VOLUME@latest, machine point, or clone name")
    start.add_argument("--tls", choices=["cert", "psk"], default="cert",
                       help="cert (default): clients verify the appliance's certificate "
                            "(REPO/tls/cert.pem); psk: a key made for this export "
                            "(`cairn exports key ID`)")
    start.add_argument("--writable", action="store_true",
                       help="a clone takes writes (a point is always read-only)")
    start.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1)")
    start.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    actions.add_parser("list", help="the exports, running or gone")
    for name, description in (("show", "one export, with every disk's URL"),
                              ("key", "the `identity:hexkey` line of a psk export's "
                                      "clients' key file")):
        actions.add_parser(name, help=description).add_argument("id", metavar="ID")
    stop = actions.add_parser("stop", help="stop an export and forget it")
    stop.add_argument("id", metavar="ID")
    stop.add_argument("--keep-as-point", action="store_true",
                      help="store what clients wrote to the exported clone as a new point "
                           "of its volume (failback); the clone stays")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        answer = _call(client, args)
    if args.json:
        print_json(answer)
    elif args.action == "key":
        print(answer["psk_file_line"])
    elif args.action in (None, "list"):
        table(HEADERS, [_row(one) for one in answer])
    else:
        _show(answer)
    return 0


def _call(client: ApplianceClient, args: argparse.Namespace) -> Any:
    if args.action == "start":
        return client.json("POST", "/api/v1/exports", json={
            "target": args.target, "host": args.host, "port": args.port, "tls": args.tls,
            "writable": args.writable})
    if args.action == "show":
        return client.json("GET", f"/api/v1/exports/{args.id}")
    if args.action == "key":
        return client.json("GET", f"/api/v1/exports/{args.id}/key")
    if args.action == "stop":
        keep = "?keep_as_point=true" if args.keep_as_point else ""
        return client.json("DELETE", f"/api/v1/exports/{args.id}{keep}", timeout=600)
    return client.json("GET", "/api/v1/exports")


def _row(one: dict[str, Any]) -> list[str]:
    return [one["id"], one["target"], one["state"], one["tls"],
            "read-write" if one["writable"] else "read-only", when(one["created"]),
            one["url"] or "-"]


def _show(one: dict[str, Any]) -> None:
    mode = "read-write" if one["writable"] else "read-only"
    print(f"export {one['id']} of {one['target']}: {one['state']}, {mode}, TLS {one['tls']}")
    for disk in one["disks"] if one["state"] == "running" else ():
        name = f"disk {disk['disk']}: " if disk["disk"] else ""
        print(f"  {name}{disk['what']} at {disk['url']}")
    if one["state"] == "running" and one["tls"] == "psk":
        print(f"  clients need the key line of `cairn exports key {one['id']}` in a file "
              "FILE, and append ?tls-psk-file=FILE to the URL")
    elif one["state"] == "running":
        print("  clients verify the server with the appliance's REPO/tls/cert.pem as their "
              "CA certificate")
    if one.get("point"):
        print(f"  what clients wrote is point {one['point']}")
    if one.get("error") and one["state"] == "gone":
        print(f"  it died: {one['error']}")
