"""Offsite policies: each machine's replication to a cloud repository, kept in appliance.db.

This module alone reads and writes the ``offsite`` table. A policy says where a machine's
points go (``target`` with its ``endpoint``), how often (``every``), which points (``send``:
all, the first of each hour, the first of each day), what the cloud keeps afterwards
(``retention``, independent of the local one), the bandwidth cap and an optional daily time
window (`window`: ``22:00-06:00``, local time) that a run must start in, and how long each
point sent stays under S3 Object Lock (``immutable``, seconds; `cairn.store.immutable`). The
outcome of the last run is kept with it (``last_ok``, ``last_error``, ``last_report``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from cairn.appliance.state import State
from cairn.appliance.window import in_window

SCHEMA = """
CREATE TABLE IF NOT EXISTS offsite(
    machine_id INTEGER PRIMARY KEY REFERENCES machines(id) ON DELETE CASCADE,
    target TEXT NOT NULL,
    endpoint TEXT,
    every REAL NOT NULL,
    send TEXT NOT NULL,
    retention TEXT,
    bandwidth INTEGER,
    window TEXT,
    created REAL NOT NULL,
    next_run REAL NOT NULL,
    forced REAL NOT NULL DEFAULT 0,
    last_ok REAL,
    last_run REAL,
    last_error TEXT,
    last_report TEXT,
    immutable REAL);
"""

@dataclass(frozen=True)
class OffsiteSettings:
    """What an admin sets for a machine's offsite copies."""

    target: str
    endpoint: str | None
    every: float
    send: str
    retention: str | None
    bandwidth: int | None
    window: str | None
    immutable: float | None
    """seconds each point sent stays under S3 Object Lock; None: not locked"""


@dataclass(frozen=True)
class OffsitePolicy(OffsiteSettings):
    """A machine's settings as stored, with its schedule and the outcome of its last run."""

    machine_id: int
    machine: str
    created: float
    next_run: float
    forced: float
    last_ok: float | None
    last_run: float | None
    last_error: str | None
    last_report: str | None

    def json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("machine_id", "last_report")}
        out["last_report"] = json.loads(self.last_report) if self.last_report else None
        return out


# In `OffsitePolicy`'s field order: the settings first, then the rest.
_COLUMNS = ("o.target, o.endpoint, o.every, o.send, o.retention, o.bandwidth, o.window, "
            "o.immutable, o.machine_id, m.name, o.created, o.next_run, o.forced, o.last_ok, "
            "o.last_run, o.last_error, o.last_report")


class OffsiteTable:
    def __init__(self, state: State) -> None:
        self.state = state
        with state.tx() as db:
            db.execute(SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(offsite)")}
            if "immutable" not in columns:  # a policy table from before Object Lock
                db.execute("ALTER TABLE offsite ADD COLUMN immutable REAL")

    def set(self, machine_id: int, settings: OffsiteSettings) -> None:
        now = time.time()
        o = settings
        with self.state.tx() as db:
            db.execute("INSERT INTO offsite(machine_id, target, endpoint, every, send, "
                       "retention, bandwidth, window, immutable, created, next_run) "
                       "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(machine_id) DO "
                       "UPDATE SET target=excluded.target, endpoint=excluded.endpoint, "
                       "every=excluded.every, send=excluded.send, retention=excluded.retention,"
                       " bandwidth=excluded.bandwidth, window=excluded.window, "
                       "immutable=excluded.immutable, next_run=?",
                       (machine_id, o.target, o.endpoint, o.every, o.send, o.retention,
                        o.bandwidth, o.window, o.immutable, now, now, now))

    def remove(self, machine_id: int) -> bool:
        with self.state.tx() as db:
            return db.execute("DELETE FROM offsite WHERE machine_id=?",
                              (machine_id,)).rowcount > 0

    def policies(self, machine_id: int | None = None) -> list[OffsitePolicy]:
        sql = f"SELECT {_COLUMNS} FROM offsite o JOIN machines m ON m.id = o.machine_id"
        if machine_id is None:
            return [OffsitePolicy(*r) for r in self.state.query(sql + " ORDER BY m.name")]
        return [OffsitePolicy(*r) for r in self.state.query(sql + " WHERE o.machine_id=?",
                                                            (machine_id,))]

    def due(self, now: float) -> list[OffsitePolicy]:
        """Policies whose slot has come and whose window is open (or that were forced)."""
        return [p for p in self.policies() if p.next_run <= now
                and (p.forced or in_window(p.window, now))]

    def force(self, machine_id: int) -> float:
        """Run at the next pass, window or not; returns the time asked (a run that started
        before it does not count as done)."""
        asked = time.time()
        with self.state.tx() as db:
            db.execute("UPDATE offsite SET next_run=0, forced=? WHERE machine_id=?",
                       (asked, machine_id))
        return asked

    def finished(self, p: OffsitePolicy, started: float, error: str | None,
                 report: dict[str, Any] | None) -> None:
        """Record a run and move to the first slot after it."""
        now = time.time()
        slot = max(p.next_run, p.created)
        if slot <= now:
            slot += (int((now - slot) // p.every) + 1) * p.every
        with self.state.tx() as db:
            db.execute("UPDATE offsite SET next_run=CASE WHEN forced>? THEN 0 ELSE ? END, "
                       "forced=CASE WHEN forced>? THEN forced ELSE 0 END, last_run=?, "
                       "last_error=?, last_report=?, "
                       "last_ok=CASE WHEN ? IS NULL THEN ? ELSE last_ok END WHERE machine_id=?",
                       (started, slot, started, started, error,
                        json.dumps(report) if report else None, error, started, p.machine_id))
