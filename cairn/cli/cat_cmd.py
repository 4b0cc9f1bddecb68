"""`cairn cat`: one file of a point to standard output, byte for byte, streamed."""

from __future__ import annotations

import argparse
import shutil
import sys

from cairn.cli._common import add_repo, open_repo
from cairn.cli._insights import PATH_SYNTAX, add_point, point_disk
from cairn.errors import PathNotFound
from cairn.insights import paths
from cairn.insights.fs import FILE, SYMLINK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cat", help="write one file of a point to standard output",
                       description="Write the file at PATH in POINT to standard output. "
                                   + PATH_SYNTAX)
    add_repo(p)
    add_point(p)
    p.add_argument("path", help="[PART:]/path of a regular file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args, read_only=True) as repo, point_disk(repo, args.point) as (_, volumes):
        location = paths.parse(args.path)
        _, fs = paths.select(volumes, location)
        entry = fs.stat(location.path)
        shown = location.show(volumes)
        if entry.kind == SYMLINK:
            raise PathNotFound(f"{shown} (a symbolic link to {entry.link_target}: "
                               "cat its target instead)")
        if entry.kind != FILE:
            raise PathNotFound(f"{shown} (a {entry.kind}, not a regular file: "
                               "`cairn ls` lists directories)")
        with fs.open(location.path) as src:
            shutil.copyfileobj(src, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    return 0
