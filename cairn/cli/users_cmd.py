"""`cairn users`: the web console's users, managed on the appliance host.

Passwords are read from standard input (``--password-stdin``), never from the command line,
where other users of the host could read them in the process list.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cairn.cli._common import add_json, add_repo, print_json, repo_location, report, table, when
from cairn.errors import UsageError
from cairn.web.users import ROLES, Users, totp_uri


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("users", help="list the web console's users; add, remove, set passwords",
                       description="Run on the appliance host, with the appliance's --repo.")
    add_repo(p)
    add_json(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    add = actions.add_parser("add", help="add a user (admin: everything; viewer: sees only)")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True,
                     help="admin: everything; viewer: sees only")
    add.add_argument("--password-stdin", action="store_true", required=True,
                     help="read the password from standard input")
    add.add_argument("--totp", action="store_true",
                     help="also require a one-time code; prints the secret to enrol")
    rm = actions.add_parser("rm", help="remove a user and end their sessions")
    rm.add_argument("name")
    passwd = actions.add_parser("passwd", help="set a user's password (ends their sessions)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true", required=True,
                        help="read the password from standard input")
    p.set_defaults(handler=run)


@contextmanager
def _users(args: argparse.Namespace) -> Iterator[Users]:
    from cairn.appliance.state import State

    repo = Path(repo_location(args))
    if not (repo / "config.json").exists():
        raise UsageError(f"{repo} is not a cairn repository: give the appliance's --repo")
    state = State(repo / "appliance.db")
    try:
        yield Users(state)
    finally:
        state.close()


def _password() -> str:
    return sys.stdin.readline().rstrip("\r\n")


def run(args: argparse.Namespace) -> int:
    with _users(args) as users:
        if args.action == "add":
            secret = users.add(args.name, args.role, _password(), args.totp)
            enrol = totp_uri(args.name, secret) if secret else None
            return report(args.json, {"name": args.name, "role": args.role,
                                      "totp_secret": secret, "totp_uri": enrol},
                          f"user {args.name} added ({args.role})" + (
                              f"\nTOTP secret {secret}; enrol with {enrol}" if secret else ""))
        if args.action == "rm":
            users.remove(args.name)
            return report(args.json, {"name": args.name, "removed": True},
                          f"user {args.name} removed")
        if args.action == "passwd":
            users.set_password(args.name, _password())
            return report(args.json, {"name": args.name, "password_changed": True},
                          f"password of {args.name} changed; their sessions were ended")
        listed = users.all_users()
    if args.json:
        print_json([{"name": u.name, "role": u.role, "totp": u.totp, "created": u.created}
                    for u in listed])
    else:
        table(["USER", "ROLE", "TOTP", "CREATED"],
              [[u.name, u.role, "yes" if u.totp else "no", when(u.created)] for u in listed])
    return 0
