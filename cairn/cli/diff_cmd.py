"""`cairn diff`: the files added, removed and modified between two points.

Fast because points share their block maps: the tree diff names the changed blocks without
reading data, and only files whose metadata changed or whose blocks are among those are
read (see `cairn.insights.points.diff_points`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cairn.cli._common import add_json, add_repo, human_bytes, open_repo, print_json, table
from cairn.cli._insights import add_point
from cairn.errors import InsightsError
from cairn.insights.fs import Entry
from cairn.insights.points import PartitionDiff, diff_points


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff", help="files added, removed and modified between two points",
        description="Compare the file systems of two points (usually of one volume). Paths "
                    "are shown as /path, or PART:/path when the points hold several file "
                    "systems. Changes of a modified entry: content, mode, owner, mtime, "
                    "target (of a symlink), kind. A rename shows as removed + added.")
    add_repo(p)
    add_point(p, "point_a")
    add_point(p, "point_b")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args, read_only=True) as repo:
        a, b = repo.resolve(args.point_a), repo.resolve(args.point_b)
        results = diff_points(repo, a, b)
    errors = [r.error for r in results if r.error is not None]
    if not any(r.diff is not None for r in results):
        # nothing was compared: no "0 added, 0 removed" a script could take for "no change"
        raise InsightsError(f"could not compare points {a.id} and {b.id}: "
                            + ("; ".join(errors) or "neither holds a file system")
                            + ": `cairn ls` shows what each holds")
    prefixed = len([r for r in results if r.filesystem is not None]) > 1
    if args.json:
        print_json({"a": a.id, "b": b.id,
                    "partitions": [_partition_json(r) for r in results]})
    else:
        _print(results, prefixed)
    for error in errors:
        print(f"cairn: warning: {error}", file=sys.stderr)
    return 0


def _entry_json(e: Entry) -> dict[str, Any]:
    return {"path": e.path, "kind": e.kind, "size": e.size}


def _partition_json(r: PartitionDiff) -> dict[str, Any]:
    out: dict[str, Any] = {"partition": r.partition, "filesystem": r.filesystem,
                           "error": r.error}
    if r.diff is not None:
        out.update(
            added=[_entry_json(e) for e in r.diff.added],
            removed=[_entry_json(e) for e in r.diff.removed],
            modified=[{"path": m.path, "kind": m.new.kind, "changes": sorted(m.changes),
                       "old_size": m.old.size, "new_size": m.new.size}
                      for m in r.diff.modified],
            files_compared=r.diff.files_compared,
        )
    return out


def _print(results: list[PartitionDiff], prefixed: bool) -> None:
    rows: list[list[str]] = []
    counts = [0, 0, 0]
    for r in results:
        if r.diff is None:
            continue
        where = f"p{r.partition}:" if prefixed else ""
        for e in r.diff.added:
            rows.append(["+", where + e.path, e.kind, human_bytes(e.size), ""])
        for e in r.diff.removed:
            rows.append(["-", where + e.path, e.kind, human_bytes(e.size), ""])
        for m in r.diff.modified:
            size = (human_bytes(m.new.size) if m.old.size == m.new.size
                    else f"{human_bytes(m.old.size)} -> {human_bytes(m.new.size)}")
            rows.append(["M", where + m.path, m.new.kind, size, ",".join(sorted(m.changes))])
        counts[0] += len(r.diff.added)
        counts[1] += len(r.diff.removed)
        counts[2] += len(r.diff.modified)
    rows.sort(key=lambda row: row[1])
    if rows:
        table(["", "PATH", "KIND", "SIZE", "CHANGES"], rows)
    print(f"{counts[0]} added, {counts[1]} removed, {counts[2]} modified")
