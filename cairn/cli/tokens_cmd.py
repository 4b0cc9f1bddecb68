"""`cairn tokens`: list, add, revoke and rotate the appliance's admin and metrics tokens."""

from __future__ import annotations

import argparse

from cairn.cli._appliance import add_appliance, admin_client
from cairn.cli._common import add_json, print_json, table, when


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("tokens", help="list the appliance's tokens; add, revoke or rotate one")
    add_appliance(p)
    add_json(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    add = actions.add_parser("add", help="make a token and print it once")
    add.add_argument("--metrics", action="store_true",
                     help="a token that reads /metrics and nothing else")
    add.add_argument("--label", help="what the token is for")
    revoke = actions.add_parser("revoke", help="make a token stop working now")
    revoke.add_argument("id")
    actions.add_parser("rotate", help="replace the admin-token file's token (the old one "
                                      "stops working)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        if args.action == "add":
            made = client.json("POST", "/api/v1/tokens", json={
                "scope": "metrics" if args.metrics else "admin", "label": args.label})
            print_json(made) if args.json else print(
                f"token {made['id']} ({made['scope']}): {made['token']}\n"
                "it is shown only now: keep it safe")
            return 0
        if args.action == "revoke":
            client.request("DELETE", f"/api/v1/tokens/{args.id}")
            print(f"token {args.id} revoked")
            return 0
        if args.action == "rotate":
            made = client.json("POST", "/api/v1/tokens/rotate")
            print_json(made) if args.json else print(
                f"admin-token rewritten with token {made['id']}; the previous one no longer "
                "works")
            return 0
        listed = client.json("GET", "/api/v1/tokens")
    if args.json:
        print_json(listed)
        return 0
    table(["ID", "KIND", "SCOPE", "CREATED", "LABEL"],
          [[t["id"], t["kind"], t["scope"], when(t["created"]), t["label"] or "-"]
           for t in listed])
    return 0
