"""The `cairn` command: one module per command, each a parser and a handler side by side.

This is the one place that turns a `CairnError` into a one-line message and an exit code
(0 ok, 1 failure, 2 usage); everything below raises and never prints errors itself.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import sqlite3
import sys
from typing import NoReturn

from cairn import __version__
from cairn.errors import (
    FAILURE,
    CairnError,
    HostError,
    ReadOnlyRepository,
    StorageFull,
    from_os_error,
)

# Command name -> the module under cairn/cli/ that registers it. Only the module of the
# command being run is imported, so `cairn backup` never pays for QEMU, NBD or web imports.
COMMANDS = {
    "init": "init_cmd",
    "backup": "backup_cmd",
    "points": "points_cmd",
    "restore": "restore_cmd",
    "delete": "delete_cmd",
    "undelete": "undelete_cmd",
    "lock": "lock_cmd",
    "unlock": "lock_cmd",
    "prune": "prune_cmd",
    "repack": "repack_cmd",
    "verify": "verify_cmd",
    "stats": "stats_cmd",
    "clone": "clone_cmd",
    "clones": "clone_cmd",
    "clone-rm": "clone_cmd",
    "export": "export_cmd",
    "exports": "exports_cmd",
    "virtualize": "virtualize_cmd",
    "screenshot-verify": "screenshot_verify_cmd",
    "replicate": "replicate_cmd",
    "ls": "ls_cmd",
    "cat": "cat_cmd",
    "restore-files": "restore_files_cmd",
    "diff": "diff_cmd",
    "mount": "mount_cmd",
    "serve": "serve_cmd",
    "agent": "agent_cmd",
    "machines": "machines_cmd",
    "jobs": "jobs_cmd",
    "tasks": "tasks_cmd",
    "schedule": "schedule_cmd",
    "alerts": "alerts_cmd",
    "offsite": "offsite_cmd",
    "users": "users_cmd",
    "tokens": "tokens_cmd",
    "debug": "debug_cmd",
    "vm": "vm_cmd",
    "rollback": "rollback_cmd",
    "cloud": "cloud_cmd",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other error, pointing at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"cairn: error: {message} (`{self.prog} --help` shows the usage)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with only ``command``'s module loaded when it is a known command."""
    parser = _Parser(
        prog="cairn",
        description="Image backups where every recovery point is whole: restore, boot, "
                    "browse or delete any point without touching another.")
    parser.add_argument("--version", action="version", version=f"cairn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for module in wanted:
        importlib.import_module(f"cairn.cli.{module}").register(sub)
    for command_parser in sub.choices.values():
        _options_anywhere(command_parser)
    return parser


def _options_anywhere(parser: argparse.ArgumentParser) -> None:
    """Let a command's options follow its action too: ``machines add web01 --repo R`` as
    well as ``machines --repo R add web01``. Each action gets a copy of the options it
    lacks, defaulting to "not given", so a value before the action is kept."""
    nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    options = [a for a in parser._actions if a.option_strings
               and not isinstance(a, argparse._HelpAction)]
    for group in nested:
        for child in group.choices.values():
            taken = set(child._option_string_actions)
            for option in options:
                if not taken.intersection(option.option_strings):
                    inherited = copy.copy(option)
                    inherited.default = argparse.SUPPRESS
                    inherited.required = False
                    child._add_action(inherited)
            _options_anywhere(child)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    if command is None and "--version" in argv:  # without loading every command's module
        print(f"cairn {__version__}")
        return 0
    args = build_parser(command).parse_args(argv)
    try:
        return args.handler(args) or 0
    except CairnError as exc:
        print(f"cairn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("cairn: interrupted: nothing half-done was committed", file=sys.stderr)
        return 130
    except Exception as exc:  # anything else: a full disk, a closed pipe, or a bug
        return _unexpected(exc, getattr(args, "repo", "") or "the catalog")


def _unexpected(exc: Exception, repo: str) -> int:
    """SQLite's and the OS's errors as one line naming the problem and the fix; a closed
    stdout quietly; anything else is a bug."""
    if isinstance(exc, BrokenPipeError):
        return FAILURE
    known: CairnError | None = None
    if isinstance(exc, OSError):
        known = from_os_error(exc)
    elif isinstance(exc, sqlite3.OperationalError):
        known = _sqlite_error(exc, repo)
    if known is None:
        return _internal(exc)
    print(f"cairn: error: {known}", file=sys.stderr)
    return known.exit_code


def _sqlite_error(exc: sqlite3.OperationalError, repo: str) -> CairnError | None:
    text = str(exc)
    if "full" in text:
        return StorageFull(repo)
    if "readonly" in text:
        return ReadOnlyRepository(repo, "SQLite: " + text)
    if "unable to open" in text or "disk I/O error" in text:
        return HostError(f"cannot open a database of {repo} (SQLite: {text}): check that "
                         "this user may read and write it and that its device works")
    return None


def _internal(exc: BaseException) -> int:
    if os.environ.get("CAIRN_DEBUG"):
        import traceback  # only a bug pays for it

        traceback.print_exc()
    print(f"cairn: internal error: {type(exc).__name__}: {exc} (set CAIRN_DEBUG=1 for "
          "details and report it)", file=sys.stderr)
    return FAILURE
