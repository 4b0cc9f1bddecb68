"""`cairn mount`: browse a point with any program through a read-only FUSE mount.

Runs in the foreground until Ctrl-C, SIGTERM or `fusermount3 -u MOUNTPOINT`; the mount is
always taken down before the command exits.
"""

from __future__ import annotations

import argparse
import sys

from cairn.cli._common import add_repo, open_repo
from cairn.cli._insights import add_point, point_disk
from cairn.insights.mount import serve
from cairn.insights.paths import single


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mount", help="mount a point read-only (FUSE) to browse it",
        description="Mount POINT read-only on MOUNTPOINT and serve it until Ctrl-C, SIGTERM "
                    "or `fusermount3 -u MOUNTPOINT`. A point with one readable file system "
                    "appears at the root; one with several shows a folder per readable "
                    "partition, named p1, p2, ... as the partition numbers of `cairn ls`.")
    add_repo(p)
    add_point(p)
    p.add_argument("mountpoint", help="an empty directory to mount on")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args, read_only=True) as repo, point_disk(repo, args.point) as (point, volumes):
        for v in volumes:
            if v.error is not None:
                print(f"cairn: warning: left out: {v.error}", file=sys.stderr)
        layout = "" if single(volumes) else " (one folder per partition)"

        def ready() -> None:
            print(f"mounted point {point.id} on {args.mountpoint}{layout}; Ctrl-C or "
                  f"`fusermount3 -u {args.mountpoint}` unmounts", file=sys.stderr, flush=True)

        serve(volumes, args.mountpoint, ready)
    print(f"unmounted {args.mountpoint}", file=sys.stderr)
    return 0
