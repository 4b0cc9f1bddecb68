"""`cairn vm lan add|list|rm`: the isolated LANs VMs may join (declared first, so a typo in
``--network isolated:LAN`` is refused instead of starting a VM on a LAN of its own)."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from cairn.agent.client import ApplianceClient
from cairn.cli._common import print_json, table


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]
             ) -> list[argparse.ArgumentParser]:
    """The ``lan`` action of `cairn vm` and its own actions (returned, for the shared options)."""
    lan = actions.add_parser("lan", help="declare, list and remove isolated LANs")
    lan_actions = lan.add_subparsers(dest="lan_action", metavar="LAN_ACTION", required=True)
    add = lan_actions.add_parser("add", help="declare an isolated LAN")
    add.add_argument("lan", metavar="NAME")
    listing = lan_actions.add_parser("list", help="the declared LANs")
    remove = lan_actions.add_parser("rm", help="remove a LAN no VM is on")
    remove.add_argument("lan", metavar="NAME")
    return [add, listing, remove]


def run(client: ApplianceClient, args: argparse.Namespace) -> None:
    if args.lan_action == "add":
        answer: Any = client.json("POST", "/api/v1/lans", json={"name": args.lan})
        message = (f"LAN {args.lan} declared: start VMs on it with "
                   f"`--network isolated:{args.lan}`")
    elif args.lan_action == "rm":
        client.json("DELETE", f"/api/v1/lans/{args.lan}")
        answer, message = {"removed": args.lan}, f"LAN {args.lan} removed"
    else:
        answer = client.json("GET", "/api/v1/lans")
        message = ""
    if args.json:
        print_json(answer)
    elif message:
        print(message)
    else:
        table(["LAN", "DECLARED"], [[lan["name"], _when(lan["created"])] for lan in answer])


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")
