"""`cairn lock` / `cairn unlock`: promise that points stay until a date."""

from __future__ import annotations

import argparse
import calendar
import time

from cairn.cli._common import add_json, add_repo, open_repo, print_json, when
from cairn.errors import UsageError
from cairn.store import marks


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lock", help="lock points: nothing deletes or prunes them before DATE")
    add_repo(p)
    p.add_argument("points", nargs="+", metavar="POINT")
    p.add_argument("--until", required=True, metavar="DATE",
                   help="YYYY-MM-DD (locked through that day, UTC), YYYY-MM-DDTHH:MM, or a "
                        "duration from now such as 30d")
    add_json(p)
    p.set_defaults(handler=run_lock)
    p = sub.add_parser("unlock", help="lift the locks of points whose date has passed")
    add_repo(p)
    p.add_argument("points", nargs="+", metavar="POINT")
    p.set_defaults(handler=run_unlock)


def parse_until(text: str) -> float:
    """A date (the end of that day, UTC), a date and time (UTC), or a duration from now."""
    for fmt, extra in (("%Y-%m-%d", 86400 - 1), ("%Y-%m-%dT%H:%M", 0), ("%Y-%m-%d %H:%M", 0)):
        try:
            return calendar.timegm(time.strptime(text, fmt)) + extra
        except ValueError:
            continue
    try:
        return time.time() + marks.parse_duration(text)
    except UsageError:
        raise UsageError(f"--until {text!r}: give a date like 2027-06-30, 2027-06-30T12:00 "
                         "or a duration like 30d") from None


def run_lock(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    points = [repo.resolve(ref) for ref in args.points]
    until = parse_until(args.until)
    marks.lock(repo, points, until)
    if args.json:
        print_json({"locked": [p.id for p in points], "locked_until": until})
        return 0
    print(f"locked {len(points)} point(s) until {when(until)}")
    return 0


def run_unlock(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    points = [repo.resolve(ref) for ref in args.points]
    marks.unlock(repo, points)
    print(f"unlocked {len(points)} point(s)")
    return 0
