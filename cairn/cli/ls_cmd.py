"""`cairn ls`: the partitions of a point and their file systems, or one directory inside one.

A partition that cannot be read is listed with the reason, never hidden and never allowed to
stop the listing of the others.
"""

from __future__ import annotations

import argparse
import stat
import sys
import time
from typing import Any

from cairn.cli._common import add_json, add_repo, human_bytes, open_repo, print_json, table
from cairn.cli._insights import PATH_SYNTAX, add_point, point_disk
from cairn.insights import paths
from cairn.insights.disk import Volume
from cairn.insights.fs import DIR, SYMLINK, Entry


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "ls", help="list the partitions of a point, or a directory inside it",
        description="Without PATH: the partitions of the point and the file system on each. "
                    "With PATH: that directory (or that one entry). " + PATH_SYNTAX)
    add_repo(p)
    add_point(p)
    p.add_argument("path", nargs="?", help="[PART:]/path of a directory or file")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args, read_only=True) as repo, point_disk(repo, args.point) as (_, volumes):
        if args.path is None:
            return _partitions(volumes, args.json)
        location = paths.parse(args.path)
        _, fs = paths.select(volumes, location)
        entry = fs.stat(location.path)
        entries = fs.list(location.path) if entry.kind == DIR else [entry]
        if args.json:
            print_json([entry_json(e) for e in entries])
        else:
            _print_entries(entries)
    return 0


def _partitions(volumes: list[Volume], as_json: bool) -> int:
    if as_json:
        print_json([partition_json(v) for v in volumes])
        return 0
    rows = []
    for v in volumes:
        fs = v.filesystem
        rows.append([
            str(v.partition.index), v.partition.type_name, v.partition.label or "-",
            human_bytes(v.partition.length),
            fs.kind if fs else "-", (fs.label or "-") if fs else "-",
            "ok" if fs else "unreadable",
        ])
    table(["PART", "TYPE", "NAME", "SIZE", "FS", "LABEL", "STATUS"], rows)
    for v in volumes:
        if v.error is not None:
            print(f"cairn: warning: {v.error}", file=sys.stderr)
    return 0


def partition_json(v: Volume) -> dict[str, Any]:
    fs = v.filesystem
    return {
        "partition": v.partition.index,
        "scheme": v.partition.scheme,
        "type": v.partition.type_name,
        "type_id": v.partition.type_id,
        "name": v.partition.label,
        "uuid": v.partition.uuid,
        "start": v.partition.start,
        "size": v.partition.length,
        "filesystem": fs.kind if fs else None,
        "label": fs.label if fs else None,
        "error": str(v.error) if v.error else None,
    }


def entry_json(e: Entry) -> dict[str, Any]:
    return {
        "name": e.name, "path": e.path, "kind": e.kind, "size": e.size,
        "mode": f"{e.permissions:04o}", "uid": e.uid, "gid": e.gid,
        "mtime": None if e.mtime is None else e.mtime / 1e9,
        "mtime_ns": e.mtime, "atime_ns": e.atime, "ctime_ns": e.ctime,
        "link_target": e.link_target, "inode": e.inode, "nlink": e.nlink,
    }


def _when(ns: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(ns / 1e9)) if ns else "-"


def _owner(value: int | None) -> str:
    return "-" if value is None else str(value)


def _print_entries(entries: list[Entry]) -> None:
    lines = []
    for e in entries:
        name = e.name or "/"
        if e.kind == SYMLINK:
            name += f" -> {e.link_target}"
        lines.append([stat.filemode(e.mode), _owner(e.uid), _owner(e.gid), str(e.size),
                      _when(e.mtime), name])
    widths = [max((len(r[i]) for r in lines), default=0) for i in range(5)]
    out = sys.stdout
    for r in lines:
        out.write(f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}} {r[2]:>{widths[2]}}  "
                  f"{r[3]:>{widths[3]}}  {r[4]}  {r[5]}\n")
