"""`cairn debug torture`: random operations killed at random moments, then a full check."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import asdict
from pathlib import Path

from cairn import scratch
from cairn.cli._common import add_json, print_json
from cairn.units import human_bytes


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("debug", help="tools that prove the store")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = actions.add_parser("torture", help="random backup, delete, prune, clone (and with "
                                           "--cloud replicate, cloud prune) SIGKILLed at "
                                           "random moments; every pass checked whole")
    t.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    t.add_argument("--seed", type=int, default=1, help="the same seed replays the same run")
    t.add_argument("--work", type=Path, help="folder for the repository and states, kept "
                                             "(default: a temporary one, removed when the "
                                             "run passes; a failed run's stays until the "
                                             "next run)")
    t.add_argument("--kill-share", type=float, default=0.7,
                   help="share of passes SIGKILLed (the others must end cleanly)")
    t.add_argument("--cloud", metavar="s3://BUCKET/PREFIX",
                   help="also replicate to and prune a cloud repository made there")
    t.add_argument("--grace", type=float, default=6.0, metavar="SECONDS",
                   help="the cloud prune's grace period in the run (default 6: condemned "
                        "packs are really deleted within the run)")
    add_json(t)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from cairn.debug.torture import Settings, torture

    work = args.work or scratch.make("cairn-torture-")
    if args.cloud:
        from cairn.store.cloud import init_cloud

        init_cloud(args.cloud, None).close()
    outcome = torture(Settings(args.seconds, args.seed, work, args.cloud,
                               args.kill_share, args.grace))
    if not args.work:  # passed: nothing to look at, and the seed replays it
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print_json({**asdict(outcome), "seed": args.seed,
                    "work": str(args.work) if args.work else None})
    else:
        print(f"seed {args.seed}: {outcome.passes} passes, {outcome.kills} SIGKILLs, "
              f"{outcome.clean_passes} clean; {outcome.points_checked} local and "
              f"{outcome.cloud_points_checked} cloud point restores checked bit for bit in "
              f"{outcome.seconds:.0f} s: nothing lost"
              + (f"; {outcome.prune_passes} passes pruned the cloud "
                 f"({outcome.prunes_killed_midway} killed inside one), {outcome.packs_freed} packs "
                 f"({human_bytes(outcome.pack_bytes_freed)}) freed; {outcome.batches_written} "
                 f"batches written ({outcome.batches_killed_midway} passes killed inside a "
                 f"batch write), {outcome.reader_points_checked} point restores checked "
                 f"through a node that reads the feed and its batches" if args.cloud else ""))
    return 0
