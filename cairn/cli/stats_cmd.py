"""`cairn stats`: how much the points hold and how little the store keeps."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from cairn.cli._common import add_json, add_repo, human_bytes, open_repo, print_json, table
from cairn.store.stats import repository_stats


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("stats", help="logical and stored sizes, dedup and compression ratios")
    add_repo(p)
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args, read_only=True) as repo:
        stats = repository_stats(repo)
    if args.json:
        print_json(asdict(stats))
        return 0
    print(f"volumes            {stats.volumes}")
    held = f" (+{stats.deleted_points} held for deletion)" if stats.deleted_points else ""
    print(f"points             {stats.points}{held}")
    # Held points are still stored, so every size and ratio below counts them too.
    print(f"logical size       {human_bytes(stats.logical_bytes)} (sum of point sizes"
          f"{', held ones included' if held else ''})")
    print(f"data in points     {human_bytes(stats.allocated_bytes)} (zero blocks excluded)")
    unsized = "" if not stats.unsized_chunks else (
        f" ({stats.unsized_chunks} of them of unknown size before compression: stored before "
        "pack indexes recorded it; the node that sent them knows it)")
    print(f"unique chunks      {stats.chunks} holding {_frees(stats.unique_bytes)}{unsized}")
    print(f"stored             {_frees(stats.stored_bytes)}")
    print(f"dedup ratio        {_times(stats.dedup_ratio)}")
    print(f"compression ratio  {_times(stats.compression_ratio)}")
    print(f"overall            {_times(stats.overall_ratio)} (logical / stored)")
    if stats.deleted_points:
        print(f"deleted, held      {stats.deleted_points} point(s), freeing "
              f"{_frees(stats.deleted_frees_bytes)} when reclaimed (`cairn points --deleted`)")
    if stats.by_volume:
        print()
        table(["VOLUME", "POINTS", "SIZE", "ADDED", "FREES IF DELETED"],
              [[v.volume, str(v.points), human_bytes(v.size), human_bytes(v.added_bytes),
                _frees(v.frees_bytes)] for v in stats.by_volume])
    return 0


def _frees(n: int | None) -> str:
    return "?" if n is None else human_bytes(n)


def _times(ratio: float | None) -> str:
    return "?" if ratio is None else f"{ratio:.2f}x"
