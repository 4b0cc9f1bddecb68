"""What every command shares: finding the repository, printing, progress bars."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cairn.errors import UsageError
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository


def add_repo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", default=os.environ.get("CAIRN_REPO"),
                        help="repository path (default: $CAIRN_REPO)")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def repo_path(args: argparse.Namespace) -> Path:
    if not args.repo:
        raise UsageError("no repository given: pass --repo PATH or set CAIRN_REPO")
    return Path(args.repo)


def open_repo(args: argparse.Namespace) -> Repository:
    return Repository.open(repo_path(args))


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def point_json(p: RecoveryPoint) -> dict[str, Any]:
    return {
        "id": p.id,
        "volume": p.volume,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p.created)),
        "created_unix": p.created,
        "size": p.size,
        "allocated": p.allocated,
        "bytes_read": p.bytes_read,
        "bytes_stored": p.bytes_stored,
        "seconds": p.seconds,
        "source": p.source,
    }


def table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@contextmanager
def progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A byte-progress bar on stderr when it is a terminal; silent otherwise."""
    if not sys.stderr.isatty():
        yield lambda _n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TransferSpeedColumn(), TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
