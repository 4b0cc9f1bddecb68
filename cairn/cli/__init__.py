"""The `cairn` command: one module per command, each a parser and a handler side by side.

This is the one place that turns a `CairnError` into a one-line message and an exit code
(0 ok, 1 failure, 2 usage); everything below raises and never prints errors itself.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import traceback

from cairn import __version__
from cairn.cli import (
    backup_cmd,
    clone_cmd,
    delete_cmd,
    export_cmd,
    init_cmd,
    points_cmd,
    prune_cmd,
    restore_cmd,
    screenshot_verify_cmd,
    stats_cmd,
    verify_cmd,
    virtualize_cmd,
)
from cairn.errors import FAILURE, CairnError, StorageFull

COMMANDS = (init_cmd, backup_cmd, points_cmd, restore_cmd, delete_cmd, prune_cmd, verify_cmd,
            stats_cmd, clone_cmd, export_cmd, virtualize_cmd, screenshot_verify_cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cairn",
        description="Image backups where every recovery point is whole: restore, boot, "
                    "browse or delete any point without touching another.")
    parser.add_argument("--version", action="version", version=f"cairn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except CairnError as exc:
        print(f"cairn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cairn: interrupted: nothing half-done was committed", file=sys.stderr)
        return 130
    except sqlite3.OperationalError as exc:
        if "full" in str(exc):
            print(f"cairn: error: {StorageFull(getattr(args, 'repo', '') or 'the catalog')}",
                  file=sys.stderr)
            return FAILURE
        return _internal(exc)
    except BrokenPipeError:
        return FAILURE
    except Exception as exc:  # a bug: say so in one line, keep the trace on request
        return _internal(exc)


def _internal(exc: BaseException) -> int:
    if os.environ.get("CAIRN_DEBUG"):
        traceback.print_exc()
    print(f"cairn: internal error: {type(exc).__name__}: {exc} (set CAIRN_DEBUG=1 for "
          "details and report it)", file=sys.stderr)
    return FAILURE
