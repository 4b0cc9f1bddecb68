"""`cairn tokens`: list, add, revoke and rotate the appliance's admin and metrics tokens."""

from __future__ import annotations

import argparse

from cairn.cli._appliance import admin_client, admin_command
from cairn.cli._common import listing, report, when


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p, actions = admin_command(sub, "tokens",
                               "list the appliance's tokens; add, revoke or rotate one")
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
            return report(args.json, made, f"token {made['id']} ({made['scope']}): "
                                           f"{made['token']}\nit is shown only now: keep it safe")
        if args.action == "revoke":
            client.request("DELETE", f"/api/v1/tokens/{args.id}")
            return report(args.json, {"id": args.id, "revoked": True},
                          f"token {args.id} revoked")
        if args.action == "rotate":
            made = client.json("POST", "/api/v1/tokens/rotate")
            return report(args.json, made, f"admin-token rewritten with token {made['id']}; "
                                           "the previous one no longer works")
        listed = client.json("GET", "/api/v1/tokens")
    return listing(args.json, listed, ["ID", "KIND", "SCOPE", "CREATED", "LABEL"],
                   lambda t: [t["id"], t["kind"], t["scope"], when(t["created"]),
                              t["label"] or "-"])
