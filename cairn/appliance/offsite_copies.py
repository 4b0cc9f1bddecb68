"""What each machine has offsite: its points in the cloud, as of its last offsite run.

This module alone reads and writes ``offsite_points``. After each run the offsite thread
records the cloud's points of the machine (after the cloud's retention), so the console
can show local and offsite points in one timeline, and what the bucket stores, without
opening the bucket on every page: a page reads one table, however slow the uplink.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cairn.appliance.state import State
from cairn.store.catalog import RecoveryPoint

SCHEMA = """
CREATE TABLE IF NOT EXISTS offsite_points(
    machine_id INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
    point_id TEXT NOT NULL,
    volume TEXT NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL,
    bytes_stored INTEGER NOT NULL,
    PRIMARY KEY(machine_id, point_id))
"""


@dataclass(frozen=True)
class OffsitePoint:
    """A point the machine's cloud repository held at the last run."""

    id: str
    volume: str
    created: float
    size: int
    bytes_stored: int


class OffsiteCopies:
    def __init__(self, state: State) -> None:
        self.state = state
        with state.tx() as db:
            db.execute(SCHEMA)

    def record(self, machine_id: int, points: Iterable[RecoveryPoint]) -> None:
        """Replace what is known of the machine's cloud points with ``points``."""
        with self.state.tx() as db:
            db.execute("DELETE FROM offsite_points WHERE machine_id=?", (machine_id,))
            db.executemany("INSERT INTO offsite_points VALUES(?, ?, ?, ?, ?, ?)",
                           [(machine_id, p.id, p.volume, p.created, p.size, p.bytes_stored)
                            for p in points])

    def points(self, machine_id: int) -> list[OffsitePoint]:
        return [OffsitePoint(*r) for r in self.state.query(
            "SELECT point_id, volume, created, size, bytes_stored FROM offsite_points "
            "WHERE machine_id=? ORDER BY created", (machine_id,))]

    def counts(self) -> dict[int, int]:
        """Per machine id: how many points it has offsite, in one query."""
        return dict(self.state.query("SELECT machine_id, COUNT(*) FROM offsite_points "
                                     "GROUP BY machine_id"))
