"""`cairn verify`: check the catalog, the accounting and (optionally) every stored byte."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_json, add_repo, open_location, open_repo, print_json
from cairn.cli._common import progress as progress_bar
from cairn.errors import Corruption, UsageError
from cairn.store.repair import verify_and_repair
from cairn.store.repository import Repository
from cairn.store.verify import verify


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("verify", help="check the repository's consistency and data")
    add_repo(p)
    p.add_argument("--point", help="only the chunks this point needs")
    p.add_argument("--read-data", action="store_true",
                   help="read and hash-check every chunk (slow, thorough)")
    p.add_argument("--repair-from", metavar="COPY",
                   help="heal damaged chunks from another copy of this repository (the cloud "
                        "one it replicates to, or the local one a cloud copy came from); "
                        "each is hash-checked")
    p.add_argument("--repair", action="store_true",
                   help="cloud repository: bring back the objects a DELETE under S3 Object "
                        "Lock only hid behind a delete marker (verify alone reads past "
                        "them and writes nothing; the next delete or prune also does this)")
    add_json(p)
    p.set_defaults(handler=run)


def _unhide(repo: Repository) -> list[str]:
    """`Cloud.revive` on everything it covers; a local repository has nothing hidden."""
    revive = getattr(repo.remote, "revive", None)
    if revive is None:
        raise UsageError("--repair brings back objects hidden in a cloud bucket: give an "
                         "s3:// repository (or --repair-from COPY to heal chunks)")
    from cairn.store.cloud_machines import PREFIX as MACHINES
    from cairn.store.cloud_packs import DATA_PREFIXES

    return list(revive(("points", "marks", MACHINES, *DATA_PREFIXES)))


def run(args: argparse.Namespace) -> int:
    if args.repair_from and args.point:
        raise UsageError("--repair-from heals the whole repository: drop --point")
    with open_repo(args, read_only=not (args.repair_from or args.repair)) as repo:
        unhidden = _unhide(repo) if args.repair else []  # read past them already
        point = repo.resolve(args.point) if args.point else None
        with progress_bar(None, "verify") as advance:   # verify tells it what it will read
            if args.repair_from:
                with open_location(args.repair_from, args) as source:
                    report, repair = verify_and_repair(repo, source, args.read_data, advance)
            else:
                report = verify(repo, point=point, read_data=args.read_data, progress=advance)
                repair = None
    if args.json:
        print_json({**report.as_json(), **({"repaired": repair.healed,
                                            "unrepairable": repair.unrepairable}
                                           if repair else {}),
                    **({"unhidden": unhidden} if args.repair else {})})
    else:
        if args.repair:
            print(f"brought back {len(unhidden)} object(s) hidden behind delete markers")
        for line in report.lines():
            print(line)
        if repair is not None:
            print(f"repaired {len(repair.healed)} chunk(s) from {args.repair_from}"
                  + "".join(f"\ncould not repair chunk {h}: {why}"
                            for h, why in repair.unrepairable.items()))
    if not report.ok:
        raise Corruption(f"verify found {len(report.problems)} problem(s); "
                         "restore hurt points from another copy or re-run their backups")
    return 0
