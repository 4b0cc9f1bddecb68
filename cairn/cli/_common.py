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
from cairn.meter import Meter
from cairn.store.profiles import is_cloud
from cairn.store.repository import Repository
from cairn.times import with_iso_times
from cairn.units import human_bytes as human_bytes  # every command's one size format


def add_repo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", default=os.environ.get("CAIRN_REPO"),
                        help="repository: a local path or s3://BUCKET/PREFIX "
                             "(default: $CAIRN_REPO)")
    add_cloud_options(parser)


def add_cloud_options(parser: argparse.ArgumentParser) -> None:
    if any(a.dest == "endpoint" for a in parser._actions):
        return
    parser.add_argument("--endpoint", default=os.environ.get("CAIRN_S3_ENDPOINT"),
                        help="S3 endpoint URL for s3:// repositories (default: "
                             "$CAIRN_S3_ENDPOINT)")
    parser.add_argument("--key-file", type=Path, default=os.environ.get("CAIRN_KEY_FILE"),
                        help="key of an encrypted repository (default: $CAIRN_KEY_FILE; a "
                             "local repository finds its own)")


def add_point(parser: argparse.ArgumentParser, name: str = "point", more: str = "") -> None:
    """The POINT argument: an id, a unique prefix, or ``VOLUME@latest`` (``more`` adds to
    its help)."""
    parser.add_argument(name, help="point id (or unique prefix, or VOLUME@latest)" + more)


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def repo_location(args: argparse.Namespace) -> str:
    if not args.repo:
        raise UsageError("no repository given: pass --repo PATH or set CAIRN_REPO")
    return str(args.repo)


def open_location(location: str, args: argparse.Namespace,
                  read_only: bool = False) -> Repository:
    """Open a local or a cloud repository; the cloud's code loads only when needed.
    ``read_only`` (commands that only read) opens a local one without writing anything,
    so it works on read-only media and with read permission only."""
    key_file = Path(args.key_file) if args.key_file else None
    if is_cloud(location):
        from cairn.store.cloud import open_cloud

        return open_cloud(location, args.endpoint, key_file)
    return Repository.open(Path(location), key_file, read_only=read_only)


def open_repo(args: argparse.Namespace, read_only: bool = False) -> Repository:
    repo = open_location(repo_location(args), args, read_only)
    repo.lock_wait = getattr(args, "lock_wait", 0.0)
    repo.on_wait = lambda message: print(f"cairn: {message}", file=sys.stderr, flush=True)
    return repo


def add_wait(parser: argparse.ArgumentParser) -> None:
    """``--wait SECONDS``: for commands that write a volume another writer may hold."""
    parser.add_argument("--wait", dest="lock_wait", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to SECONDS for another writer of the volume (or a use "
                             "of the point) to finish, instead of failing at once")


def print_json(value: Any) -> None:
    """JSON for scripts: every Unix time (`TIME_FIELDS`) also as ISO 8601 with its zone."""
    json.dump(with_iso_times(value), sys.stdout, indent=2)
    sys.stdout.write("\n")


def print_json_line(value: Any) -> None:
    """One JSON object on one line, flushed: what a long-running command (``export``,
    ``virtualize``, ``jobs --follow``) prints per event with ``--json`` (JSON Lines)."""
    sys.stdout.write(json.dumps(with_iso_times(value)) + "\n")
    sys.stdout.flush()


def when(ts: float) -> str:
    """Local time with its zone, as every table shows it."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def report(as_json: bool, value: Any, text: str) -> int:
    """Print what an action did: ``value`` as JSON with ``--json``, else ``text``."""
    if as_json:
        print_json(value)
    else:
        print(text)
    return 0


def listing(as_json: bool, items: list[Any], headers: list[str],
            row: Callable[[Any], list[str]]) -> int:
    """Print a list command's ``items``: as JSON with ``--json``, else a table of ``row``s."""
    if as_json:
        print_json(items)
    else:
        table(headers, [row(item) for item in items])
    return 0


def table(headers: list[str], rows: list[list[str]], least: list[int] | None = None
          ) -> list[int]:
    """Print aligned columns, each at least as wide as ``least`` says; returns their widths,
    for rows printed later (`row_line`)."""
    least = least or [0] * len(headers)
    widths = [max(len(h), least[i], *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        print(row_line(row, widths))
    return widths


def row_line(row: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()


@contextmanager
def progress(total: int | None, description: str) -> Iterator[Meter]:
    """A byte-progress bar on stderr when it is a terminal, with total, rate and ETA in
    binary units (``total`` None: not known ahead, until the job calls `Meter.expect`);
    silent when stderr is not a terminal."""
    if not sys.stderr.isatty():
        yield _Silent()
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        Task,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text("?" if speed is None else f"{human_bytes(speed)}/s",
                        style="progress.data.speed")

    with Progress("[progress.description]{task.description}", BarColumn(),
                  DownloadColumn(binary_units=True), Rate(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task(description, total=total or None)
        yield _Bar(bar, task, total or 0)


class _Silent:
    def __call__(self, done: int) -> None:
        pass

    def expect(self, more: int) -> None:
        pass


class _Bar:
    """A rich task as a `Meter`: ``expect`` grows its total."""

    def __init__(self, bar: Any, task: Any, total: int) -> None:
        self.bar, self.task, self.total = bar, task, total

    def __call__(self, done: int) -> None:
        self.bar.advance(self.task, done)

    def expect(self, more: int) -> None:
        self.total += more
        self.bar.update(self.task, total=self.total)
