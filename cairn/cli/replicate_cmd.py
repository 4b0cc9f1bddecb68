"""`cairn replicate`: send the points a cloud repository lacks, and only missing chunks."""

from __future__ import annotations

import argparse
import sys

from cairn.cli._common import (
    add_json,
    add_repo,
    human_bytes,
    open_location,
    open_repo,
    print_json,
    when,
)
from cairn.cli._common import progress as progress_bar
from cairn.ops.machine_points import machine_volumes
from cairn.ops.offsite import make_immutable
from cairn.replication.replicate import Pace, parse_rate, replicate
from cairn.store.marks import parse_duration


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("replicate", help="copy points to a cloud repository (s3://...)")
    add_repo(p)
    p.add_argument("--to", required=True, metavar="s3://BUCKET/PREFIX",
                   help="the cloud repository (uses --endpoint and the local key)")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--volume", help="only this volume")
    only.add_argument("--machine", help="only this machine's disks (its machine points, whole)")
    p.add_argument("--bandwidth", help="cap on bytes sent per second, e.g. 50M")
    p.add_argument("--send", default="all", choices=("all", "hourly", "daily"),
                   help="every point (default), or only the first of each hour or day")
    p.add_argument("--immutable", metavar="DURATION",
                   help="keep each point sent (and every chunk it needs) under S3 Object Lock "
                        "for DURATION, e.g. 30d; the bucket must enforce Object Lock")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    rate = parse_rate(args.bandwidth)
    with open_repo(args) as local:
        if local.config.key_id is not None and args.key_file is None:
            args.key_file = local.path / "key"
        with open_location(args.to, args) as cloud, progress_bar(None, "replicate") as advance:
            if args.immutable:
                advice = make_immutable(cloud, parse_duration(args.immutable))
                if advice is not None:
                    print(f"warning: {advice}", file=sys.stderr)
            volumes = machine_volumes(local, args.machine) if args.machine else args.volume
            report = replicate(local, cloud, volumes, Pace(rate), advance, args.send)
    if args.json:
        print_json(report.__dict__)
        return 0
    locked = (f"; immutable until {when(report.locked_until)} ({report.lock_requests} "
              "Object Lock extension(s))" if report.locked_until else "")
    print(f"replicated {len(report.points)} point(s): sent {report.chunks_sent} chunk(s), "
          f"{human_bytes(report.bytes_sent)}; {report.chunks_already_there} already in the "
          f"cloud; {report.seconds:.2f} s" + (f"; {report.not_sent_removed} point(s) the cloud "
                                              "removed were not sent again"
                                              if report.not_sent_removed else "") + locked
          + (f"; {len(report.machine_points)} machine point(s) complete in the cloud"
             if report.machine_points else ""))
    return 0
