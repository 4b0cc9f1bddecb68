"""Verification policies: how often each machine's points are booted and read, in appliance.db.

This module alone reads and writes ``verification_policies``. ``screenshot`` is ``each``
(every new point), ``daily`` (the newest point, once a day), ``weekly`` or ``off``;
``expect_text`` replaces the default verdict (a login, sign-in or lock screen);
``verify_data`` N reads and hash-checks a rotating 1/N of the stored chunks each night.
Only points created after the policy was first set are due, so turning it on does not
queue a machine's whole history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cairn.appliance.state import State
from cairn.errors import UsageError

SCHEMA = """
CREATE TABLE IF NOT EXISTS verification_policies(
    machine_id INTEGER PRIMARY KEY REFERENCES machines(id) ON DELETE CASCADE,
    screenshot TEXT NOT NULL,
    expect_text TEXT,
    verify_data INTEGER,
    since REAL NOT NULL);
CREATE TABLE IF NOT EXISTS data_verification(
    location TEXT PRIMARY KEY,
    next_slice INTEGER NOT NULL,
    last_run REAL NOT NULL);
"""

# How long a verified point stays good enough before the newest is booted again.
EVERY = {"each": 0.0, "daily": 86400.0, "weekly": 7 * 86400.0}
CHOICES = ("each", "daily", "weekly", "off")


@dataclass(frozen=True)
class VerificationPolicy:
    machine_id: int
    machine: str
    screenshot: str
    expect_text: str | None
    verify_data: int | None
    since: float

    def json(self) -> dict[str, Any]:
        return {"machine": self.machine, "screenshot": self.screenshot,
                "expect_text": self.expect_text, "verify_data": self.verify_data,
                "since": self.since}


def check(screenshot: str, verify_data: int | None) -> None:
    if screenshot not in CHOICES:
        raise UsageError(f"--screenshot {screenshot!r}: give each, daily, weekly or off")
    if verify_data is not None and not 1 <= verify_data <= 366:
        raise UsageError(f"--verify-data {verify_data}: give the days to read every stored "
                         "byte in, 1 to 366 (e.g. 7: a seventh each night)")


class VerificationTable:
    def __init__(self, state: State) -> None:
        self.state = state
        with state.tx() as db:
            for statement in filter(str.strip, SCHEMA.split(";")):
                db.execute(statement)

    def set(self, machine_id: int, screenshot: str, expect_text: str | None,
            verify_data: int | None) -> None:
        check(screenshot, verify_data)
        with self.state.tx() as db:
            db.execute("INSERT INTO verification_policies VALUES(?, ?, ?, ?, ?) "
                       "ON CONFLICT(machine_id) DO UPDATE SET screenshot=excluded.screenshot, "
                       "expect_text=excluded.expect_text, verify_data=excluded.verify_data",
                       (machine_id, screenshot, expect_text, verify_data, time.time()))

    def policies(self) -> list[VerificationPolicy]:
        return [VerificationPolicy(*r) for r in self.state.query(
            "SELECT v.machine_id, m.name, v.screenshot, v.expect_text, v.verify_data, v.since "
            "FROM verification_policies v JOIN machines m ON m.id = v.machine_id "
            "ORDER BY m.name")]

    def policy(self, machine_id: int) -> VerificationPolicy | None:
        return next((p for p in self.policies() if p.machine_id == machine_id), None)

    def data_days(self) -> int | None:
        """The shortest ``verify_data`` any machine asks for: the store is shared (a chunk
        may serve many machines), so it is read as a whole at the strictest pace."""
        days = [p.verify_data for p in self.policies() if p.verify_data]
        return min(days) if days else None

    def data_progress(self, location: str) -> tuple[int, float]:
        """``(next slice, last run)`` of a repository's rotating data check."""
        rows = self.state.query("SELECT next_slice, last_run FROM data_verification "
                                "WHERE location=?", (location,))
        return (rows[0][0], rows[0][1]) if rows else (0, 0.0)

    def data_checked(self, location: str, next_slice: int, when: float) -> None:
        with self.state.tx() as db:
            db.execute("INSERT OR REPLACE INTO data_verification VALUES(?, ?, ?)",
                       (location, next_slice, when))
