"""`cairn verify`: check the catalog, the accounting and (optionally) every stored byte."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_json, add_repo, open_repo, print_json
from cairn.cli._common import progress as progress_bar
from cairn.errors import Corruption
from cairn.store.verify import verify


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="check the repository's consistency and data")
    add_repo(p)
    p.add_argument("--point", help="only the chunks this point needs")
    p.add_argument("--read-data", action="store_true",
                   help="read and hash-check every chunk (slow, thorough)")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    point = repo.resolve(args.point) if args.point else None
    with progress_bar(0, "verify") as advance:
        report = verify(repo, point=point, read_data=args.read_data, progress=advance)
    if args.json:
        print_json(report.as_json())
    else:
        for line in report.lines():
            print(line)
    if not report.ok:
        raise Corruption(f"verify found {len(report.problems)} problem(s); "
                         "restore hurt points from another copy or re-run their backups")
    return 0
