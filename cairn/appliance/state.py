"""The appliance's own bookkeeping: machines, tokens, volumes, schedules, jobs, uploads.

Kept in ``<repo>/appliance.db`` (SQLite, WAL), apart from the store's catalog. Tokens are
stored only as SHA-256 digests: they are 256-bit random strings, so a plain digest is as
strong as a password hash and lets a request find its machine with one indexed lookup.

Job states: ``queued`` -> ``running`` -> ``succeeded`` | ``failed``; a slot the scheduler
could not use is recorded directly as ``missed``. At most one job per machine is ``queued``
or ``running`` at a time (jobs never overlap on one machine). After a restart, ``running``
jobs go back to ``queued``: their agent picks them up again and resumes its open upload.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cairn.frames import MAX_FRAME
from cairn.store.sqlite import SharedDb

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_tokens(
    id TEXT PRIMARY KEY,
    hash TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    label TEXT,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS machines(
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    created REAL NOT NULL,
    pair_hash TEXT UNIQUE,
    pair_expires REAL,
    token_hash TEXT UNIQUE,
    paired REAL,
    last_seen REAL);
CREATE TABLE IF NOT EXISTS volumes(
    machine_id INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    registered REAL NOT NULL,
    PRIMARY KEY(machine_id, name));
CREATE TABLE IF NOT EXISTS schedules(
    machine_id INTEGER PRIMARY KEY REFERENCES machines(id) ON DELETE CASCADE,
    every REAL,
    cron TEXT,
    retention TEXT,
    next_run REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs(
    id INTEGER PRIMARY KEY,
    machine_id INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    full_rescan INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    heartbeat REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    bytes_read INTEGER NOT NULL DEFAULT 0,
    bytes_sent INTEGER NOT NULL DEFAULT 0,
    bytes_stored INTEGER NOT NULL DEFAULT 0,
    points TEXT NOT NULL DEFAULT '[]',
    retention TEXT);
CREATE INDEX IF NOT EXISTS jobs_by_machine ON jobs(machine_id, state);
CREATE TABLE IF NOT EXISTS uploads(
    id TEXT PRIMARY KEY,
    machine_id INTEGER NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
    volume TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    point TEXT,
    bytes_stored INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS received(
    upload_id TEXT NOT NULL,
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY(upload_id, offset, length)) WITHOUT ROWID;
"""

ACTIVE = ("queued", "running")
PAIRING_SECONDS = 24 * 3600


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class Machine:
    id: int
    name: str
    created: float
    paired: float | None
    last_seen: float | None


@dataclass(frozen=True)
class Schedule:
    machine_id: int
    machine: str
    every: float | None
    cron: str | None
    retention: str | None
    next_run: float


@dataclass(frozen=True)
class Upload:
    id: str
    machine_id: int
    volume: str
    size: int
    state: str
    point: str | None
    bytes_stored: int


@dataclass(frozen=True)
class Job:
    """One backup job of one machine; ``seconds`` and ``waited`` are derived, not stored."""

    id: int
    machine_id: int
    state: str
    reason: str
    full_rescan: bool
    created: float
    started: float | None
    finished: float | None
    heartbeat: float | None
    attempts: int
    error: str | None
    bytes_read: int
    bytes_sent: int
    bytes_stored: int
    points: list[str]
    retention: dict[str, Any] | None
    """What retention did after the job: deleted, kept and why, or its error."""
    machine: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def seconds(self) -> float | None:
        """How long it ran: until now while running."""
        ends = self.finished or (time.time() if self.state == "running" else None)
        return round(ends - self.started, 3) if ends and self.started else None

    @property
    def waited(self) -> float | None:
        """How long it was queued before an agent took it."""
        return round(self.started - self.created, 3) if self.started else None

    def json(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": self.seconds, "waited": self.waited}

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Job:
        values = dict(zip(_JOB_COLUMNS, row, strict=True))
        values["full_rescan"] = bool(values["full_rescan"])
        values["points"] = json.loads(values["points"])
        values["retention"] = json.loads(values["retention"]) if values["retention"] else None
        return cls(**values)


_MACHINE = "id, name, created, paired, last_seen"
_JOB_COLUMNS = ("id", "machine_id", "state", "reason", "full_rescan", "created", "started",
                "finished", "heartbeat", "attempts", "error", "bytes_read", "bytes_sent",
                "bytes_stored", "points", "retention", "machine")


class State(SharedDb):
    """All bookkeeping calls; safe across the API's threads and the scheduler thread."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Columns added since the first release, added to databases made before them."""
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(jobs)")}
        if "retention" not in columns:
            self.db.execute("ALTER TABLE jobs ADD COLUMN retention TEXT")

    # -- admin ---------------------------------------------------------------------------

    def token_scope(self, token: str) -> str | None:
        """``admin`` or ``metrics`` for a live token (`cairn.appliance.tokens`), else None."""
        rows = self.query("SELECT scope FROM api_tokens WHERE hash=?", (digest(token),))
        return str(rows[0][0]) if rows else None

    def is_admin(self, token: str) -> bool:
        return self.token_scope(token) == "admin"

    # -- machines and pairing ----------------------------------------------------------

    def machine(self, name: str) -> Machine | None:
        rows = self.query(f"SELECT {_MACHINE} FROM machines WHERE name=?", (name,))
        return Machine(*rows[0]) if rows else None

    def machine_by_id(self, machine_id: int) -> Machine:
        return Machine(*self.query(f"SELECT {_MACHINE} FROM machines WHERE id=?",
                                   (machine_id,))[0])

    def machines(self) -> list[Machine]:
        return [Machine(*r) for r in self.query(f"SELECT {_MACHINE} FROM machines ORDER BY name")]

    def add_machine(self, name: str) -> str:
        """Create ``name`` (or renew its pairing) and return a one-time pairing token."""
        token = new_token("pair")
        with self.tx() as db:
            db.execute("INSERT INTO machines(name, created) VALUES(?, ?) "
                       "ON CONFLICT(name) DO NOTHING", (name, time.time()))
            db.execute("UPDATE machines SET pair_hash=?, pair_expires=? WHERE name=?",
                       (digest(token), time.time() + PAIRING_SECONDS, name))
        return token

    def pair(self, pairing_token: str) -> tuple[Machine, str] | None:
        """Trade a pairing token for the machine's agent token (once); None if invalid."""
        token = new_token("agent")
        with self.tx() as db:
            row = db.execute(f"SELECT {_MACHINE} FROM machines WHERE pair_hash=? "
                             "AND pair_expires>?", (digest(pairing_token), time.time())
                             ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE machines SET pair_hash=NULL, pair_expires=NULL, token_hash=?, "
                       "paired=?, last_seen=? WHERE id=?",
                       (digest(token), time.time(), time.time(), row[0]))
        return Machine(*row), token

    def agent(self, token: str) -> Machine | None:
        rows = self.query(f"SELECT {_MACHINE} FROM machines WHERE token_hash=?",
                          (digest(token),))
        return Machine(*rows[0]) if rows else None

    def seen(self, machine_id: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE machines SET last_seen=? WHERE id=?", (time.time(), machine_id))

    def remove_machine(self, machine_id: int) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM machines WHERE id=?", (machine_id,))

    # -- volumes ---------------------------------------------------------------------------

    def register_volume(self, machine_id: int, name: str, size: int) -> None:
        with self.tx() as db:
            db.execute("INSERT INTO volumes VALUES(?, ?, ?, ?) ON CONFLICT(machine_id, name) "
                       "DO UPDATE SET size=excluded.size", (machine_id, name, size, time.time()))

    def volumes(self, machine_id: int) -> list[tuple[str, int]]:
        return [(r[0], r[1]) for r in self.query(
            "SELECT name, size FROM volumes WHERE machine_id=? ORDER BY name", (machine_id,))]

    # -- schedules -------------------------------------------------------------------------

    def set_schedule(self, machine_id: int, every: float | None, cron: str | None,
                     retention: str | None, next_run: float) -> None:
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO schedules VALUES(?, ?, ?, ?, ?)",
                       (machine_id, every, cron, retention, next_run))

    def delete_schedule(self, machine_id: int) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM schedules WHERE machine_id=?", (machine_id,))

    def schedules(self, due_before: float | None = None) -> list[Schedule]:
        sql = ("SELECT s.machine_id, m.name, s.every, s.cron, s.retention, s.next_run "
               "FROM schedules s JOIN machines m ON m.id = s.machine_id")
        if due_before is None:
            return [Schedule(*r) for r in self.query(sql + " ORDER BY m.name")]
        return [Schedule(*r) for r in self.query(sql + " WHERE s.next_run<=? ORDER BY next_run",
                                                 (due_before,))]

    def schedule(self, machine_id: int) -> Schedule | None:
        return next((s for s in self.schedules() if s.machine_id == machine_id), None)

    def advance(self, machine_id: int, next_run: float) -> None:
        with self.tx() as db:
            db.execute("UPDATE schedules SET next_run=? WHERE machine_id=?",
                       (next_run, machine_id))

    # -- jobs ------------------------------------------------------------------------------

    def queue_job(self, machine_id: int, reason: str, full_rescan: bool = False
                  ) -> tuple[int, bool]:
        """``(job id, created)``: the machine's active job is returned rather than a second."""
        with self.tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE machine_id=? AND state IN (?, ?)",
                             (machine_id, *ACTIVE)).fetchone()
            if row is not None:
                return row[0], False
            cur = db.execute("INSERT INTO jobs(machine_id, state, reason, full_rescan, created) "
                             "VALUES(?, 'queued', ?, ?, ?)",
                             (machine_id, reason, int(full_rescan), time.time()))
        assert cur.lastrowid is not None
        return cur.lastrowid, True

    def record_missed(self, machine_id: int, reason: str, error: str) -> int:
        now = time.time()
        with self.tx() as db:
            cur = db.execute("INSERT INTO jobs(machine_id, state, reason, created, finished, "
                             "error) VALUES(?, 'missed', ?, ?, ?, ?)",
                             (machine_id, reason, now, now, error))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def active_job(self, machine_id: int, states: tuple[str, ...] = ACTIVE) -> int | None:
        """A job of the machine in one of ``states`` (default: queued or running)."""
        rows = self.query(f"SELECT id FROM jobs WHERE machine_id=? AND state IN "
                          f"({', '.join('?' * len(states))})", (machine_id, *states))
        return rows[0][0] if rows else None

    def take_job(self, machine_id: int) -> Job | None:
        """The job an agent should run now: its unfinished one first, else the oldest queued."""
        with self.tx() as db:
            row = db.execute("SELECT id FROM jobs WHERE machine_id=? AND state IN (?, ?) "
                             "ORDER BY state='running' DESC, id LIMIT 1",
                             (machine_id, *ACTIVE)).fetchone()
            if row is None:
                return None
            now = time.time()
            db.execute("UPDATE jobs SET state='running', started=COALESCE(started, ?), "
                       "heartbeat=?, attempts=attempts+1 WHERE id=?", (now, now, row[0]))
        return self.job(row[0])

    def heartbeat(self, job_id: int, bytes_sent: int | None = None) -> None:
        with self.tx() as db:
            db.execute("UPDATE jobs SET heartbeat=? WHERE id=? AND state='running'",
                       (time.time(), job_id))
            if bytes_sent is not None:
                db.execute("UPDATE jobs SET bytes_sent=bytes_sent+? WHERE id=?",
                           (bytes_sent, job_id))

    def record_retention(self, job_id: int, outcome: dict[str, Any] | None) -> None:
        """What retention did after the job (deleted, kept and why, or its error); written
        before `finish_job`, so a finished job always shows it."""
        if outcome is not None:
            with self.tx() as db:
                db.execute("UPDATE jobs SET retention=? WHERE id=?",
                           (json.dumps(outcome), job_id))

    def finish_job(self, job_id: int, ok: bool, error: str | None, bytes_read: int,
                   bytes_stored: int, points: list[str]) -> None:
        with self.tx() as db:
            db.execute("UPDATE jobs SET state=?, finished=?, error=?, bytes_read=?, "
                       "bytes_stored=?, points=? WHERE id=? AND state IN (?, ?)",
                       ("succeeded" if ok else "failed", time.time(), error, bytes_read,
                        bytes_stored, json.dumps(points), job_id, *ACTIVE))

    def fail_stale(self, older_than: float) -> list[int]:
        """Fail running jobs whose agent has been silent since ``older_than``."""
        with self.tx() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE state='running' AND heartbeat<?", (older_than,))]
            db.executemany("UPDATE jobs SET state='failed', finished=?, error=? WHERE id=?",
                           ((time.time(), "the agent stopped answering during the job; its "
                             "upload resumes with the next job", i) for i in ids))
        return ids

    def requeue_running(self) -> int:
        """At start: jobs a previous appliance process was running go back to the queue."""
        with self.tx() as db:
            cur = db.execute("UPDATE jobs SET state='queued' WHERE state='running'")
        return cur.rowcount

    def job(self, job_id: int) -> Job | None:
        rows = self.jobs(job_id=job_id)
        return rows[0] if rows else None

    def jobs(self, machine_id: int | None = None, job_id: int | None = None,
             since_id: int = 0, limit: int = 200) -> list[Job]:
        """Jobs oldest first: the ``limit`` newest after ``since_id``."""
        cols = ", ".join(f"j.{c}" for c in _JOB_COLUMNS[:-1])
        sql = f"SELECT {cols}, m.name FROM jobs j JOIN machines m ON m.id=j.machine_id WHERE j.id>?"
        params: list[Any] = [since_id]
        if machine_id is not None:
            sql += " AND j.machine_id=?"
            params.append(machine_id)
        if job_id is not None:
            sql += " AND j.id=?"
            params.append(job_id)
        rows = self.query(sql + " ORDER BY j.id DESC LIMIT ?", (*params, limit))
        return [Job.from_row(row) for row in reversed(rows)]

    def last_finished_job(self, machine_id: int) -> Job | None:
        """The machine's latest job that succeeded or failed (missed slots do not count)."""
        rows = self.query("SELECT id FROM jobs WHERE machine_id=? AND state IN "
                          "('succeeded', 'failed') ORDER BY id DESC LIMIT 1", (machine_id,))
        return self.job(rows[0][0]) if rows else None

    def job_totals(self) -> dict[str, Any]:
        by_state = dict(self.query("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        sums = self.query("SELECT COALESCE(SUM(bytes_read),0), COALESCE(SUM(bytes_sent),0), "
                          "COALESCE(SUM(bytes_stored),0), COALESCE(SUM(finished-started),0), "
                          "COUNT(finished-started) FROM jobs WHERE state='succeeded'")[0]
        return {"by_state": by_state, "bytes_read": sums[0], "bytes_sent": sums[1],
                "bytes_stored": sums[2], "seconds": sums[3], "succeeded": sums[4]}

    # -- uploads ---------------------------------------------------------------------------

    def open_upload(self, machine_id: int, volume: str, size: int) -> tuple[Upload, list[str]]:
        """The machine's open upload of ``volume`` (resumed) or a new one.

        Returns it with the ids of stale uploads dropped on the way (a size change makes
        what they received useless), whose spool files the caller removes.
        """
        with self.tx() as db:
            stale = [r[0] for r in db.execute(
                "SELECT id FROM uploads WHERE machine_id=? AND volume=? AND state='open' "
                "AND size!=?", (machine_id, volume, size))]
            for upload_id in stale:
                db.execute("UPDATE uploads SET state='aborted' WHERE id=?", (upload_id,))
                db.execute("DELETE FROM received WHERE upload_id=?", (upload_id,))
            row = db.execute("SELECT id FROM uploads WHERE machine_id=? AND volume=? "
                             "AND state='open'", (machine_id, volume)).fetchone()
            if row is None:
                upload_id = secrets.token_hex(8)
                db.execute("INSERT INTO uploads(id, machine_id, volume, size, state, created) "
                           "VALUES(?, ?, ?, ?, 'open', ?)",
                           (upload_id, machine_id, volume, size, time.time()))
            else:
                upload_id = row[0]
        upload = self.upload(upload_id)
        assert upload is not None
        return upload, stale

    def upload(self, upload_id: str) -> Upload | None:
        rows = self.query("SELECT id, machine_id, volume, size, state, point, bytes_stored "
                          "FROM uploads WHERE id=?", (upload_id,))
        return Upload(*rows[0]) if rows else None

    def received(self, upload_id: str, after: int = -1, limit: int = -1
                 ) -> list[tuple[int, int, bytes]]:
        """The frames received past offset ``after``, by offset, at most ``limit`` (records
        never overlap, so an offset names one)."""
        return [(r[0], r[1], r[2]) for r in self.query(
            "SELECT offset, length, hash FROM received WHERE upload_id=? AND offset>? "
            "ORDER BY offset LIMIT ?", (upload_id, after, limit))]

    def received_ranges(self, upload_id: str, page: int = 10_000
                        ) -> Iterator[tuple[int, int]]:
        """``(offset, length)`` of each frame received, by offset, read a page at a time:
        a commit checks a large upload's coverage without holding all its records."""
        after = (-1, 0)
        while True:
            rows = self.query("SELECT offset, length FROM received WHERE upload_id=? AND "
                              "(offset, length) > (?, ?) ORDER BY offset, length LIMIT ?",
                              (upload_id, *after, page))
            yield from ((o, n) for o, n in rows)
            if len(rows) < page:
                return
            after = rows[-1]

    def add_received(self, upload_id: str, frames: list[tuple[int, int, bytes]]) -> None:
        """Record ``frames`` in the order they were written, each replacing the records it
        overlaps (its bytes overwrote theirs): records never overlap, so with MIN_FRAME
        they number at most size / MIN_FRAME + 1 however many frames an agent sends."""
        with self.tx() as db:
            for offset, length, digest in frames:
                _forget(db, upload_id, offset, length)
                db.execute("INSERT OR REPLACE INTO received VALUES(?, ?, ?, ?)",
                           (upload_id, offset, length, digest))

    def forget_received(self, upload_id: str, frames: list[tuple[int, int]]) -> None:
        """Drop the records of frames overlapping ``frames`` (offset, length): their bytes
        are about to be overwritten."""
        with self.tx() as db:
            for offset, length in frames:
                _forget(db, upload_id, offset, length)

    def abort_open_uploads(self) -> None:
        """Uploads in flight lived in another appliance's spool (this one was recovered
        from its state): agents start them again."""
        with self.tx() as db:
            db.execute("UPDATE uploads SET state='aborted' WHERE state='open'")
            db.execute("DELETE FROM received")

    def commit_upload(self, upload_id: str, point: str, bytes_stored: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE uploads SET state='committed', point=?, bytes_stored=? "
                       "WHERE id=?", (point, bytes_stored, upload_id))
            db.execute("DELETE FROM received WHERE upload_id=?", (upload_id,))


def _forget(db: sqlite3.Connection, upload_id: str, offset: int, length: int) -> None:
    """Drop the records overlapping ``offset+length``. A recorded frame is at most
    MAX_FRAME long, which bounds the index range an overlap is looked for in."""
    db.execute("DELETE FROM received WHERE upload_id=? AND offset<? AND offset>? "
               "AND offset+length>?", (upload_id, offset + length, offset - MAX_FRAME, offset))
