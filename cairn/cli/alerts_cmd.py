"""`cairn alerts`: open alerts and failing channels; where alerts go; a test message."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cairn.cli._appliance import admin_client, admin_command
from cairn.cli._common import print_json, table, when
from cairn.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p, actions = admin_command(sub, "alerts", "open alerts; `alerts set` says where they go")
    p.add_argument("--all", action="store_true", help="resolved alerts too")
    put = actions.add_parser("set", help="send alerts to a webhook and/or an e-mail address")
    put.add_argument("--webhook", metavar="URL", help="POST a JSON document per alert here")
    put.add_argument("--email", metavar="ADDRESS", help="send alerts to this address")
    put.add_argument("--smtp", metavar="HOST:PORT", help="mail server for --email")
    put.add_argument("--starttls", action="store_true", help="upgrade SMTP with STARTTLS")
    put.add_argument("--smtp-user", metavar="USER", help="log in to the mail server")
    put.add_argument("--smtp-password-file", type=Path, metavar="FILE",
                     help="file holding the SMTP password")
    put.add_argument("--from", dest="sender", metavar="ADDRESS",
                     help="sender address (default cairn@HOSTNAME)")
    actions.add_parser("test", help="send a test alert through every channel now")
    p.set_defaults(handler=run)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    password = None
    if args.smtp_password_file is not None:
        try:
            password = args.smtp_password_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read {args.smtp_password_file} ({exc.strerror}): give "
                             "a readable file holding the SMTP password") from None
    return {"webhook": args.webhook, "email": args.email, "smtp": args.smtp,
            "starttls": args.starttls, "smtp_user": args.smtp_user, "smtp_password": password,
            "sender": args.sender}


def run(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        if args.action == "set":
            answer = client.json("PUT", "/api/v1/alerts/settings", json=_settings(args))
            for warning in answer["warnings"]:
                print(f"cairn: warning: {warning}", file=sys.stderr)
            if args.json:
                print_json(answer)
            else:
                s = answer["settings"]
                where = [f"webhook {s['webhook']}"] if s["webhook"] else []
                where += [f"e-mail {s['email']} via {s['smtp']}"] if s["email"] else []
                print("alerts go to " + " and ".join(where))
            return 0
        if args.action == "test":
            return _test(client.json("POST", "/api/v1/alerts/test"), args.json)
        listing = client.json("GET", "/api/v1/alerts", params={"all": args.all})
    if args.json:
        print_json(listing)
        return 0
    _print(listing)
    return 0


def _test(answer: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print_json(answer)
    for r in [] if as_json else answer["results"]:
        print(f"{r['channel']}: " + ("sent" if r["ok"] else f"FAILED: {r['error']}"))
    return 0 if all(r["ok"] for r in answer["results"]) else 1


def _print(listing: dict[str, Any]) -> None:
    alerts = listing["alerts"]
    if alerts:
        table(["ID", "KIND", "MACHINE", "SEVERITY", "SINCE", "STATE", "MESSAGE"],
              [[str(a["id"]), a["kind"], a["machine"] or "-", a["severity"],
                when(a["first_seen"]), f"resolved {when(a['resolved'])}" if a["resolved"]
                else "open", a["message"]] for a in alerts])
    else:
        print("no open alerts")
    if not listing["channels"]:
        print("no alert channel is set: `cairn alerts set --webhook URL` or --email")
    for f in listing["failing_channels"]:
        print(f"{f['channel']} is FAILING: {f['error']} ({f['attempts']} attempts, "
              f"{f['pending']} messages waiting, next try {when(f['next_try'])})")
