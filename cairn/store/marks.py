"""Marks on points: locks, deletion holds and ransomware flags, which outlive any one command.

A point may carry (table ``point_marks`` of the catalog, owned by this module)::

    locked_until  Unix time before which nothing may delete it (`cairn lock`)
    deleted_at    when it was deleted; it stays whole and restorable, hidden from listings
    purge_after   ... until this time, when the normal delete path reclaims it
    flags         JSON list of the reasons detection found it suspicious

A held (deleted) point keeps its row in ``points`` and all its runs, so reference counts,
verify and cloud sweeps see it as any point and nothing it needs can be freed; only the
faces (listings, retention, replication) leave it out through `live_points`. Undelete
just drops the mark. Why holding rather than deleting: ransomware crews delete backups
first, so a deletion by a stolen login must be reversible for a while.

Locks are checked by `cairn.store.delete.delete_points`, the one path that really deletes,
so the CLI, the API, retention and agents all obey them; a lock can be extended, never
shortened or lifted before its date. For a cloud repository every mark is also a sealed
object ``marks/<point id>.json`` in the bucket (`Cloud.publish_marks`), so every node
learns it at its next sync.

A point's marks go with it: a trigger deletes its row in the statement that deletes the
point's row, so every deletion (`delete`, a purge, a prune, a cloud cache forgetting points)
drops them in its own transaction (as `signals` does). What a repository kept before the
trigger existed is an *orphan* row (its point gone); which ones may go differs:

- a local repository writes marks only for points in its catalog (`_store`), so every
  orphan there is a point deleted: all go once, when the trigger is made;
- a cloud cache takes marks from the bucket's records, and may take a point's marks before
  its record (an incremental sync reading a marks entry for a point published after it
  listed, or whose record it has not read yet): such a row is the only copy this node keeps
  of a lock or a hold it already took (the seq is remembered, so the record is not read
  again until a full sync). So a cache drops no orphan when the trigger is made; its full
  sync drops them (`Cloud._full`): a marks record exists only once its point's record does
  (`Cloud.publish_marks` follows the record's publication), so a row that was here before a
  full listing of ``points/`` (locked hidden records included) which does not show its point
  is the mark of a point whose record has gone since: a point the same sync forgets.
- a read-only repository is not changed: neither trigger nor cleanup (its reads join
  ``points`` anyway).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from cairn.errors import PointLocked, UsageError
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository

DEFAULT_WINDOW = 3 * 86400
_TABLE = """CREATE TABLE IF NOT EXISTS point_marks(
    point_id TEXT PRIMARY KEY,
    locked_until REAL,
    deleted_at REAL,
    purge_after REAL,
    flags TEXT NOT NULL DEFAULT '[]')"""
_GONE_WITH_POINT = """CREATE TRIGGER IF NOT EXISTS point_marks_gone AFTER DELETE ON points
    BEGIN DELETE FROM point_marks WHERE point_id = OLD.id; END"""
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNITS = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Marks:
    locked_until: float | None = None
    deleted_at: float | None = None
    purge_after: float | None = None
    flags: tuple[str, ...] = field(default_factory=tuple)

    def locked(self, now: float) -> bool:
        return self.locked_until is not None and self.locked_until > now

    @property
    def empty(self) -> bool:
        return self == Marks()

    def json(self) -> dict[str, Any]:
        return {"locked_until": self.locked_until, "deleted_at": self.deleted_at,
                "purge_after": self.purge_after, "flags": list(self.flags)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Marks:
        def when(name: str) -> float | None:
            value = raw.get(name)
            return None if value is None else float(value)

        flags = raw.get("flags") or []
        if not isinstance(flags, list):
            raise ValueError("flags is not a list")
        return cls(when("locked_until"), when("deleted_at"), when("purge_after"),
                   tuple(str(f) for f in flags))


def parse_duration(text: str) -> float:
    """``3d``, ``12h``, ``2w``, ``90`` (days) to seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise UsageError(f"duration {text!r}: write it like 3d, 12h, 2w or 90 (days)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def deletion_window() -> float:
    """How long a deleted point stays restorable: ``$CAIRN_DELETE_WINDOW`` or 3 days."""
    text = os.environ.get("CAIRN_DELETE_WINDOW")
    return parse_duration(text) if text else DEFAULT_WINDOW


def _ensure(repo: Repository) -> None:
    """The table, and the trigger that removes a point's marks with it (see the module
    doc for the orphans dropped when it is made)."""
    catalog = repo.catalog
    catalog.ensure_schema(_TABLE)
    if catalog.read_only or catalog.db.execute(
            "SELECT 1 FROM main.sqlite_master WHERE type='trigger' AND "
            "name='point_marks_gone'").fetchone() is not None:
        return
    with catalog.transaction() as db:
        db.execute(_GONE_WITH_POINT)
        if repo.remote is None:
            db.execute("DELETE FROM point_marks WHERE point_id NOT IN (SELECT id FROM points)")


def orphans(repo: Repository) -> set[str]:
    """The points with marks here but no row in ``points`` (a cloud cache's taken before
    their record, or left from before the trigger)."""
    _ensure(repo)
    return {r[0] for r in repo.catalog.db.execute(
        "SELECT point_id FROM point_marks WHERE point_id NOT IN (SELECT id FROM points)")}


def all_marks(repo: Repository) -> dict[str, Marks]:
    """Every marked point's marks (points that no longer exist are left out)."""
    _ensure(repo)
    rows = repo.catalog.db.execute(
        "SELECT m.point_id, m.locked_until, m.deleted_at, m.purge_after, m.flags "
        "FROM point_marks m JOIN points p ON p.id = m.point_id")
    return {r[0]: Marks(r[1], r[2], r[3], tuple(json.loads(r[4]))) for r in rows}


def marks_of(repo: Repository, point_id: str) -> Marks:
    return all_marks(repo).get(point_id, Marks())


def _store(repo: Repository, point: RecoveryPoint, marks: Marks) -> None:
    """Write ``point``'s marks: to the bucket first for a cloud (the truth), then here."""
    publish = getattr(repo.remote, "publish_marks", None)
    if publish is not None:
        publish(point, marks)
    replace_marks(repo, {point.id: marks})


def replace_marks(repo: Repository, marks: dict[str, Marks]) -> None:
    """Set the marks of the points in ``marks`` (an empty `Marks` removes them)."""
    _ensure(repo)
    with repo.catalog.transaction() as db:
        for point_id, m in marks.items():
            db.execute("DELETE FROM point_marks WHERE point_id=?", (point_id,))
            if not m.empty:
                db.execute("INSERT INTO point_marks(point_id, locked_until, deleted_at, "
                           "purge_after, flags) VALUES(?, ?, ?, ?, ?)",
                           (point_id, m.locked_until, m.deleted_at, m.purge_after,
                            json.dumps(list(m.flags))))


def refuse_if_locked(repo: Repository, points: Iterable[RecoveryPoint],
                     now: float | None = None) -> None:
    now = time.time() if now is None else now
    marks = all_marks(repo)
    for p in points:
        m = marks.get(p.id)
        if m is not None and m.locked(now):
            raise PointLocked(p.id, m.locked_until or 0)


def lock(repo: Repository, points: Sequence[RecoveryPoint], until: float) -> None:
    """Lock ``points`` until ``until``; a lock may be extended, never shortened."""
    now = time.time()
    if until <= now:
        raise UsageError("--until must be in the future")
    for p in points:
        m = marks_of(repo, p.id)
        if m.deleted_at is not None:
            raise UsageError(f"point {p.id} is deleted: `cairn undelete {p.id}` first")
        if m.locked(now) and (m.locked_until or 0) > until:
            raise PointLocked(p.id, m.locked_until or 0)
        _store(repo, p, replace(m, locked_until=until))


def unlock(repo: Repository, points: Sequence[RecoveryPoint]) -> None:
    """Lift expired locks; a lock before its date is refused (that is what it is for)."""
    refuse_if_locked(repo, points)
    for p in points:
        _store(repo, p, replace(marks_of(repo, p.id), locked_until=None))


def flag(repo: Repository, point: RecoveryPoint, reasons: Sequence[str]) -> None:
    _store(repo, point, replace(marks_of(repo, point.id), flags=tuple(reasons)))


def hold(repo: Repository, points: Sequence[RecoveryPoint], window: float | None = None
         ) -> float:
    """Delete ``points`` reversibly: hidden, whole, reclaimed after the window; returns
    when. Locked points and points with clones are refused before anything is marked, as
    `delete_points` refuses them: a hold must end in a reclaim that can succeed."""
    from cairn.store.clones import refuse_if_cloned  # only a hold needs the clones' code

    now = time.time()
    refuse_if_locked(repo, points, now)
    for p in points:
        refuse_if_cloned(repo, p)
    purge = now + (deletion_window() if window is None else window)
    for p in points:
        _store(repo, p, replace(marks_of(repo, p.id), deleted_at=now, purge_after=purge))
    return purge


def undelete(repo: Repository, point: RecoveryPoint) -> None:
    m = marks_of(repo, point.id)
    if m.deleted_at is None:
        raise UsageError(f"point {point.id} is not deleted: nothing to bring back")
    _store(repo, point, replace(m, deleted_at=None, purge_after=None))


def held_points(repo: Repository) -> list[tuple[RecoveryPoint, Marks]]:
    """Deleted points still within their window, oldest deletion first."""
    marks = all_marks(repo)
    held = [(p, marks[p.id]) for p in repo.catalog.points()
            if p.id in marks and marks[p.id].deleted_at is not None]
    return sorted(held, key=lambda pm: pm[1].deleted_at or 0)


def expired(repo: Repository, now: float | None = None) -> list[RecoveryPoint]:
    """Held points whose window has passed: the normal delete path reclaims them."""
    now = time.time() if now is None else now
    return [p for p, m in held_points(repo) if (m.purge_after or 0) <= now]


def live_points(repo: Repository, volume_id: int | None = None) -> list[RecoveryPoint]:
    """The points a user works with: every point but the deleted ones being held."""
    held = {p.id for p, _m in held_points(repo)}
    return [p for p in repo.catalog.points(volume_id) if p.id not in held]


def keep_reasons(repo: Repository, points: Sequence[RecoveryPoint]) -> dict[str, str]:
    """Why retention must keep some of ``points`` whatever its policy: a lock not yet
    expired, or a ransomware flag (the last clean point may be the one before it, and the
    flagged one is the evidence)."""
    now = time.time()
    marks = all_marks(repo)
    reasons: dict[str, str] = {}
    for p in points:
        m = marks.get(p.id)
        if m is None:
            continue
        if m.locked(now):
            day = time.strftime("%Y-%m-%d", time.gmtime(m.locked_until or 0))
            reasons[p.id] = f"locked until {day}"
        elif m.flags:
            reasons[p.id] = "flagged"
    return reasons
