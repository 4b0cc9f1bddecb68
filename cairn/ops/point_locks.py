"""Locking points until a date, and listing the deleted points still held.

`cairn lock`/`unlock`, ``POST /api/v1/points/{ref}/lock|unlock`` and ``GET
/api/v1/points/deleted`` call these. What a lock promises and where it is enforced (the one
path that deletes) is `cairn.store.marks`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cairn.errors import UsageError
from cairn.ops.machine_points import points_of
from cairn.store import marks
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository


@dataclass(frozen=True)
class LockResult:
    locked: list[str]
    """ids of the points locked"""
    locked_until: float

    def json(self) -> dict[str, Any]:
        return {"locked": self.locked, "locked_until": self.locked_until}


def parse_until(text: str) -> float:
    """A date (the end of that day, UTC), a date and time (UTC), or a duration from now."""
    import calendar  # here: `cairn points` imports this module for `held_json`

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


def lock(repo: Repository, refs: Sequence[str], until: str) -> LockResult:
    """Lock the points ``refs`` name (a machine point: every disk's) until ``until``
    (`parse_until`); a lock can be extended, never shortened (`PointLocked`)."""
    when = parse_until(until)
    points = points_of(repo, refs)
    marks.lock(repo, points, when)
    return LockResult([p.id for p in points], when)


def unlock(repo: Repository, refs: Sequence[str]) -> list[str]:
    """Lift the locks whose date has passed; one still in force is refused (`PointLocked`)."""
    points = points_of(repo, refs)
    marks.unlock(repo, points)
    return [p.id for p in points]


def marks_json(m: marks.Marks) -> dict[str, Any]:
    """A point's lock and ransomware flags, beside its `point_json` in every listing."""
    return {"locked_until": m.locked_until, "flagged": bool(m.flags),
            "flag_reasons": list(m.flags)}


def held_json(held: Sequence[tuple[RecoveryPoint, marks.Marks]]) -> list[dict[str, Any]]:
    """Deleted points still in their window (`marks.held_points`) as JSON: each point's
    public fields with when it was deleted and when it is reclaimed."""
    return [{**p.public(), "deleted_at": m.deleted_at, "purge_after": m.purge_after}
            for p, m in held]
