"""The alerts' tables in ``<repo>/appliance.db``: this module alone reads and writes them.

An alert is one open *condition*, named by ``(kind, machine, subject)``: raising it again
while it is open only refreshes it (one alert per condition, not one per check); resolving
it stamps ``resolved``. Each opening and each resolution owes one *delivery* per channel
configured at that moment; a delivery that fails is retried with backoff by the dispatcher
and its last error stays visible (`cairn alerts`). Settings are one JSON row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.errors import UsageError
from cairn.store.sqlite import SharedDb

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    machine TEXT NOT NULL DEFAULT '',
    subject TEXT NOT NULL DEFAULT '',
    severity TEXT NOT NULL,
    message TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    resolved REAL);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts(kind, machine, subject)
    WHERE resolved IS NULL;
CREATE TABLE IF NOT EXISTS alert_deliveries(
    alert_id INTEGER NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    channel TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    sent REAL,
    error TEXT,
    PRIMARY KEY(alert_id, event, channel));
CREATE TABLE IF NOT EXISTS alert_settings(
    id INTEGER PRIMARY KEY CHECK(id = 1),
    settings TEXT NOT NULL);
"""

SEVERITIES = ("info", "warning", "critical")
_ALERT = "id, kind, machine, subject, severity, message, first_seen, last_seen, resolved"


@dataclass(frozen=True)
class Alert:
    id: int
    kind: str
    machine: str
    subject: str
    severity: str
    message: str
    first_seen: float
    last_seen: float
    resolved: float | None


@dataclass(frozen=True)
class Delivery:
    """One message owed to one channel: the opening (``open``) or the ``resolved`` one."""

    alert: Alert
    event: str
    channel: str
    attempts: int
    next_try: float
    sent: float | None
    error: str | None


class AlertStore(SharedDb):
    """Safe across the API's threads, the dispatcher and other processes (WAL, IMMEDIATE)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    # -- settings --------------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        rows = self.query("SELECT settings FROM alert_settings WHERE id=1")
        return json.loads(rows[0][0]) if rows else {}

    def set_settings(self, settings: dict[str, Any]) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO alert_settings VALUES(1, ?)",
                       (json.dumps(settings),))

    def channels(self) -> list[str]:
        """The channels configured now, in delivery order."""
        s = self.settings()
        return [c for c, on in (("webhook", s.get("webhook")), ("email", s.get("email"))) if on]

    # -- conditions ------------------------------------------------------------------------

    def open(self, kind: str, message: str, machine: str = "", subject: str = "",
             severity: str = "warning", now: float | None = None) -> tuple[Alert, bool]:
        """Open the condition, or refresh it if open; ``(alert, newly opened)``."""
        if severity not in SEVERITIES:
            raise UsageError(f"alert severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        now = time.time() if now is None else now
        channels = self.channels()
        with self.tx() as db:
            row = db.execute("SELECT id FROM alerts WHERE kind=? AND machine=? AND subject=? "
                             "AND resolved IS NULL", (kind, machine, subject)).fetchone()
            if row is not None:
                db.execute("UPDATE alerts SET last_seen=?, message=?, severity=? WHERE id=?",
                           (now, message, severity, row[0]))
                alert_id, new = row[0], False
            else:
                cur = db.execute("INSERT INTO alerts(kind, machine, subject, severity, message, "
                                 "first_seen, last_seen) VALUES(?, ?, ?, ?, ?, ?, ?)",
                                 (kind, machine, subject, severity, message, now, now))
                alert_id, new = cur.lastrowid, True
                db.executemany("INSERT INTO alert_deliveries(alert_id, event, channel, next_try) "
                               "VALUES(?, 'open', ?, ?)", ((alert_id, c, now) for c in channels))
        alert = self.alert(alert_id)
        assert alert is not None
        return alert, new

    def resolve(self, kind: str, machine: str = "", subject: str = "",
                now: float | None = None) -> Alert | None:
        """Close the open condition, if any, and owe each channel a resolved message."""
        now = time.time() if now is None else now
        channels = self.channels()
        with self.tx() as db:
            row = db.execute("SELECT id FROM alerts WHERE kind=? AND machine=? AND subject=? "
                             "AND resolved IS NULL", (kind, machine, subject)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE alerts SET resolved=? WHERE id=?", (now, row[0]))
            db.executemany("INSERT INTO alert_deliveries(alert_id, event, channel, next_try) "
                           "VALUES(?, 'resolved', ?, ?)", ((row[0], c, now) for c in channels))
        return self.alert(row[0])

    def alert(self, alert_id: int) -> Alert | None:
        rows = self.query(f"SELECT {_ALERT} FROM alerts WHERE id=?", (alert_id,))
        return Alert(*rows[0]) if rows else None

    def alerts(self, include_resolved: bool = False, kind: str | None = None) -> list[Alert]:
        sql = f"SELECT {_ALERT} FROM alerts WHERE (resolved IS NULL OR ?)"
        params: list[Any] = [int(include_resolved)]
        if kind is not None:
            sql += " AND kind=?"
            params.append(kind)
        return [Alert(*r) for r in self.query(sql + " ORDER BY id", tuple(params))]

    # -- deliveries ------------------------------------------------------------------------

    def deliveries(self, alert_id: int | None = None, due_before: float | None = None
                   ) -> list[Delivery]:
        """Deliveries of one alert, or all unsent ones due by ``due_before``."""
        cols = ", ".join(f"a.{c.strip()}" for c in _ALERT.split(","))
        sql = (f"SELECT {cols}, d.event, d.channel, d.attempts, d.next_try, d.sent, d.error "
               "FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id WHERE 1")
        params: list[Any] = []
        if alert_id is not None:
            sql += " AND d.alert_id=?"
            params.append(alert_id)
        if due_before is not None:
            sql += " AND d.sent IS NULL AND d.next_try<=?"
            params.append(due_before)
        rows = self.query(sql + " ORDER BY d.next_try, a.id", tuple(params))
        return [Delivery(Alert(*r[:9]), *r[9:]) for r in rows]

    def delivered(self, d: Delivery, now: float | None = None) -> None:
        with self.tx() as db:
            db.execute("UPDATE alert_deliveries SET sent=?, attempts=attempts+1, error=NULL "
                       "WHERE alert_id=? AND event=? AND channel=?",
                       (time.time() if now is None else now, d.alert.id, d.event, d.channel))

    def failed(self, d: Delivery, error: str, next_try: float) -> None:
        with self.tx() as db:
            db.execute("UPDATE alert_deliveries SET attempts=attempts+1, error=?, next_try=? "
                       "WHERE alert_id=? AND event=? AND channel=?",
                       (error, next_try, d.alert.id, d.event, d.channel))

    def failing(self) -> list[Delivery]:
        """Unsent deliveries that have failed at least once: the channels to show as failing."""
        return [d for d in self.deliveries() if d.sent is None and d.attempts > 0]
