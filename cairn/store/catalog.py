"""The catalog: which points exist and how many runs hold each chunk (SQLite, WAL).

The catalog is the single source of truth for what is committed. A point exists once its
row is committed, and that commit happens only after every chunk it needs is durable in the
backend. Invariant kept by every writer: *a row in ``chunks`` implies a durable chunk*;
rows are added only at point commit (after the backend's ``sync``) and chunk bytes are
deleted only after their row is gone (via ``pending_free``).

``sessions`` and ``pins`` make a backup's work visible before it commits: a chunk a backup
wrote or decided to reuse is pinned, so a concurrent delete never frees it, and a backup
killed halfway leaves pins that the next writer of that volume turns back into free space.

``session_chunks`` is what a backup will commit, kept as it goes rather than in memory (a
disk of a few TB has tens of millions of blocks): per chunk, the runs the new point starts
and the sizes it wrote. Only its own session reads it, and it goes with the session.

``bad_chunks`` quarantines damage: a chunk that failed its hash or went missing, found by
any read. A backup never counts a bad chunk as present, so it stores a fresh copy whenever
its source still has the block, and marks the chunk *healed*; the next verify re-reads it
and reports the points that healed.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import ReadOnlyRepository, StorageFull
from cairn.store import sqlite

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes(
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS points(
    id TEXT PRIMARY KEY,
    volume_id INTEGER NOT NULL REFERENCES volumes(id),
    seq INTEGER NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    allocated INTEGER NOT NULL,
    bytes_read INTEGER NOT NULL,
    bytes_stored INTEGER NOT NULL,
    seconds REAL NOT NULL,
    source TEXT NOT NULL,
    UNIQUE(volume_id, seq));
CREATE TABLE IF NOT EXISTS chunks(
    hash BLOB PRIMARY KEY,
    refs INTEGER NOT NULL,
    size INTEGER NOT NULL,
    stored INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sessions(
    id INTEGER PRIMARY KEY,
    volume_id INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    command TEXT NOT NULL,
    started REAL NOT NULL);
CREATE TABLE IF NOT EXISTS pins(
    session_id INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY(session_id, hash)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pins_by_hash ON pins(hash);
CREATE TABLE IF NOT EXISTS pending_free(hash BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clones(
    name TEXT PRIMARY KEY,
    point_id TEXT NOT NULL REFERENCES points(id),
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS verifications(
    point_id TEXT PRIMARY KEY REFERENCES points(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    ocr_text TEXT NOT NULL,
    screenshot TEXT NOT NULL,
    seconds REAL NOT NULL,
    at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS point_origins(
    origin TEXT PRIMARY KEY,
    point_id TEXT NOT NULL REFERENCES points(id) ON DELETE CASCADE);
CREATE TABLE IF NOT EXISTS bad_chunks(
    hash BLOB PRIMARY KEY,
    reason TEXT NOT NULL,
    found REAL NOT NULL,
    healed REAL) WITHOUT ROWID;
"""

_SESSION_CHUNKS = """
CREATE TABLE IF NOT EXISTS session_chunks(
    session_id INTEGER NOT NULL,
    hash BLOB NOT NULL,
    runs INTEGER NOT NULL,
    size INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    PRIMARY KEY(session_id, hash)) WITHOUT ROWID;
"""
"""made by the first backup that needs it (`open_session`), so a catalog of an older
cairn opens as it is, even read-only"""


@dataclass(frozen=True)
class ChunkTotals:
    """What `Catalog.chunk_totals` counts. A cloud cache knows the plain size of the chunks
    it sent itself and of those whose pack index carries it (packs written since
    2026-12-01), and the stored size of those an index or a listing showed (`Cloud.sync`):
    ``unsized`` and ``unstored`` count the chunks left out of ``plain`` and ``stored``."""

    chunks: int
    plain: int
    stored: int
    unsized: int
    unstored: int


@dataclass(frozen=True)
class Volume:
    id: int
    name: str


POINT_FIELDS = ("id", "volume", "created", "size", "allocated", "bytes_read", "bytes_stored",
                "seconds", "source")
"""A point's public fields: its JSON everywhere (``--json``, the REST API, the web console)
and its record in a cloud bucket (which adds the block map's root). ``created`` is Unix time."""


@dataclass(frozen=True)
class RecoveryPoint:
    """One committed recovery point: a whole image of its volume at one moment."""

    id: str
    volume: str
    volume_id: int
    seq: int
    created: float
    size: int
    root: bytes
    allocated: int
    bytes_read: int
    bytes_stored: int
    seconds: float
    source: str

    def public(self) -> dict[str, object]:
        """The `POINT_FIELDS` of this point, ready for JSON."""
        return {f: getattr(self, f) for f in POINT_FIELDS}


@dataclass(frozen=True)
class Verification:
    """The last screenshot verification of a point: did it boot, and what did it show."""

    point_id: str
    status: str
    reason: str
    ocr_text: str
    screenshot: str
    seconds: float
    at: float


_POINT_COLUMNS = (
    "p.id, v.name, p.volume_id, p.seq, p.created, p.size, p.root, p.allocated, "
    "p.bytes_read, p.bytes_stored, p.seconds, p.source"
)


_CREATE_TABLE = "CREATE TABLE IF NOT EXISTS "


def _chunked(items: list[bytes], size: int = 500) -> Iterator[list[bytes]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Catalog:
    def __init__(self, path: Path, read_only: bool = False) -> None:
        """``read_only``: never write (read-only media, read permission only); a change
        then raises `ReadOnlyRepository`."""
        self.path = path
        self.read_only = read_only
        self.db = sqlite.connect_read_only(path) if read_only else sqlite.connect(path)
        self._depth = 0
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        if self.db.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            if read_only:
                raise ReadOnlyRepository(str(path.parent), "its catalog must first be "
                                         "upgraded to this cairn's format")
            self.ensure_schema(SCHEMA, f"PRAGMA user_version={SCHEMA_VERSION}")

    def ensure_schema(self, schema: str, *then: str) -> None:
        """Create the tables of ``schema`` (``CREATE ... IF NOT EXISTS`` statements) when
        one is missing, then run ``then``, in one transaction; nothing is written (and no
        write lock waited for) when all are there.

        Read-only, a missing table is made empty in the connection's own TEMP schema
        (what an old repository never wrote is simply none), and indexes are skipped.
        """
        statements = [s.strip() for s in schema.split(";") if s.strip()]
        missing = [s for s in statements if s.upper().startswith(_CREATE_TABLE)
                   and not self._has_table(s[len(_CREATE_TABLE):].split("(", 1)[0].strip())]
        if self.read_only:
            for statement in missing:
                self.db.execute("CREATE TEMP TABLE IF NOT EXISTS "
                                + statement[len(_CREATE_TABLE):])
        elif missing or then:
            with self.transaction() as db:
                for statement in [*statements, *then]:
                    db.execute(statement)

    @classmethod
    def create(cls, path: Path) -> Catalog:
        return cls(path)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic unit of change, taken under SQLite's write lock.

        ``durable=False`` skips the WAL fsync: for bookkeeping whose loss in a power cut
        costs at most leaked space (pins, sessions), never for what makes a point visible
        or lets chunk files be unlinked. Transactions nest: an inner one joins the outer,
        so a caller can read (neighbours, say), compute and write as one unit while other
        processes sharing the catalog wait.
        """
        if self.read_only:
            raise ReadOnlyRepository(str(self.path.parent), "opened read-only")
        if self._depth:
            self._depth += 1
            try:
                yield self.db
            finally:
                self._depth -= 1
            return
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self.db
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if "readonly" in str(exc):
                raise ReadOnlyRepository(str(self.path.parent), "SQLite: " + str(exc)) from exc
            full = sqlite.full_disk(exc, self.path)
            if full is exc:
                raise
            raise full from exc

    # -- volumes and points -------------------------------------------------------------

    def volume(self, name: str) -> Volume | None:
        row = self.db.execute("SELECT id, name FROM volumes WHERE name=?", (name,)).fetchone()
        return Volume(*row) if row else None

    def ensure_volume(self, name: str) -> Volume:
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO volumes(name, created) VALUES(?, ?)",
                       (name, time.time()))
        volume = self.volume(name)
        assert volume is not None
        return volume

    def volumes(self) -> list[Volume]:
        return [Volume(*r) for r in self.db.execute("SELECT id, name FROM volumes ORDER BY id")]

    def points(self, volume_id: int | None = None) -> list[RecoveryPoint]:
        query = f"SELECT {_POINT_COLUMNS} FROM points p JOIN volumes v ON v.id = p.volume_id"
        if volume_id is None:
            rows = self.db.execute(query + " ORDER BY p.created, p.volume_id, p.seq")
        else:
            rows = self.db.execute(query + " WHERE p.volume_id=? ORDER BY p.seq", (volume_id,))
        return [RecoveryPoint(*r) for r in rows]

    def point(self, point_id: str) -> RecoveryPoint | None:
        row = self.db.execute(
            f"SELECT {_POINT_COLUMNS} FROM points p JOIN volumes v ON v.id = p.volume_id "
            "WHERE p.id=?", (point_id,)).fetchone()
        return RecoveryPoint(*row) if row else None

    def points_with_prefix(self, prefix: str) -> list[str]:
        rows = self.db.execute("SELECT id FROM points WHERE id >= ? AND id < ? ORDER BY id",
                               (prefix, prefix + "\uffff"))
        return [r[0] for r in rows]

    def _neighbour(self, point: RecoveryPoint, later: bool) -> RecoveryPoint | None:
        op, order = (">", "ASC") if later else ("<", "DESC")
        row = self.db.execute(
            f"SELECT {_POINT_COLUMNS} FROM points p JOIN volumes v ON v.id = p.volume_id "
            f"WHERE p.volume_id=? AND p.seq {op} ? ORDER BY p.seq {order} LIMIT 1",
            (point.volume_id, point.seq)).fetchone()
        return RecoveryPoint(*row) if row else None

    def neighbours(self, point: RecoveryPoint) -> tuple[RecoveryPoint | None, RecoveryPoint | None]:
        return self._neighbour(point, later=False), self._neighbour(point, later=True)

    def latest(self, volume_id: int) -> RecoveryPoint | None:
        row = self.db.execute(
            f"SELECT {_POINT_COLUMNS} FROM points p JOIN volumes v ON v.id = p.volume_id "
            "WHERE p.volume_id=? ORDER BY p.seq DESC LIMIT 1", (volume_id,)).fetchone()
        return RecoveryPoint(*row) if row else None

    def volume_totals(self) -> dict[str, tuple[int, int]]:
        """Per volume name: how many points it has and the bytes they stored, in one query."""
        rows = self.db.execute("SELECT v.name, COUNT(p.id), COALESCE(SUM(p.bytes_stored), 0) "
                               "FROM volumes v LEFT JOIN points p ON p.volume_id = v.id "
                               "GROUP BY v.id")
        return {r[0]: (r[1], r[2]) for r in rows}

    # -- a backup session: pins, then one commit ----------------------------------------

    def open_session(self, volume_id: int) -> int:
        command = " ".join(sys.argv)[:200]
        self.ensure_schema(_SESSION_CHUNKS)
        with self.transaction(durable=False) as db:
            cur = db.execute(
                "INSERT INTO sessions(volume_id, pid, host, command, started) "
                "VALUES(?, ?, ?, ?, ?)",
                (volume_id, os.getpid(), os.uname().nodename, command, time.time()))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def pin(self, session: int, hashes: list[bytes]) -> set[bytes]:
        """Pin ``hashes`` for ``session``; returns those already durable in the store."""
        present: set[bytes] = set()
        with self.transaction(durable=False) as db:
            db.executemany("INSERT OR IGNORE INTO pins(session_id, hash) VALUES(?, ?)",
                           ((session, h) for h in hashes))
            for part in _chunked(hashes):
                marks = ",".join("?" * len(part))
                present.update(r[0] for r in db.execute(
                    f"SELECT hash FROM chunks WHERE hash IN ({marks})", part))
        return present

    def pinned_by(self, session: int, hashes: list[bytes]) -> set[bytes]:
        """Those of ``hashes`` that ``session`` pinned already (it stored or reused them)."""
        found: set[bytes] = set()
        for part in _chunked(hashes):
            marks = ",".join("?" * len(part))
            found.update(r[0] for r in self.db.execute(
                f"SELECT hash FROM pins WHERE session_id=? AND hash IN ({marks})",
                (session, *part)))
        return found

    def stage(self, session: int, rows: list[tuple[bytes, int, int, int]]) -> None:
        """Add to what ``session`` will commit, per chunk ``(hash, new runs, size, stored
        bytes)``: size and stored bytes of a chunk it wrote, else 0. Not durable: a
        session that does not commit is abandoned, and its staged rows with it."""
        with self.transaction(durable=False) as db:
            db.executemany(
                "INSERT INTO session_chunks VALUES(?, ?, ?, ?, ?) ON CONFLICT DO UPDATE "
                "SET runs = runs + excluded.runs, size = MAX(size, excluded.size), "
                "stored = MAX(stored, excluded.stored)",
                ((session, *row) for row in rows))

    def unstage_runs(self, session: int) -> None:
        """Forget the runs ``session`` staged (sizes stay): it counts them again."""
        with self.transaction(durable=False) as db:
            db.execute("UPDATE session_chunks SET runs = 0 WHERE session_id=?", (session,))

    def commit_point(self, session: int | None, point: RecoveryPoint,
                     increments: Counter[bytes], written: dict[bytes, tuple[int, int]],
                     append: bool = True) -> None:
        """Make ``point`` visible with its new runs, in one durable transaction.

        ``written`` maps each chunk this session stored to ``(size, stored bytes)``; every
        other incremented chunk was pinned and found present, so its row exists. What the
        session staged (`stage`) is committed with them. A point's
        place in its volume (``seq``) follows its creation time in microseconds, so a point
        that arrives late (replicated, or learnt from a bucket) slots in where it belongs;
        a new backup (``append``) always goes last, even if the clock went back, since its
        increments were counted against the last point.
        """
        with self.transaction() as db:
            seq = int(point.created * 1_000_000)
            if append:
                last = db.execute("SELECT MAX(seq) FROM points WHERE volume_id=?",
                                  (point.volume_id,)).fetchone()[0]
                seq = max(seq, (last or 0) + 1)
            while db.execute("SELECT 1 FROM points WHERE volume_id=? AND seq=?",
                             (point.volume_id, seq)).fetchone():
                seq += 1
            db.execute(
                "INSERT INTO points(id, volume_id, seq, created, size, root, allocated, "
                "bytes_read, bytes_stored, seconds, source) "
                "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (point.id, point.volume_id, seq, point.created, point.size,
                 point.root, point.allocated, point.bytes_read, point.bytes_stored,
                 point.seconds, point.source))
            db.executemany(
                "INSERT INTO chunks(hash, refs, size, stored) VALUES(?, ?, ?, ?) "
                "ON CONFLICT(hash) DO UPDATE SET refs = refs + excluded.refs, "
                "size = MAX(size, excluded.size), stored = MAX(stored, excluded.stored)",
                ((h, n, *written.get(h, (0, 0))) for h, n in increments.items()))
            if session is not None:
                self._commit_staged(db, session)
                db.execute("DELETE FROM pins WHERE session_id=?", (session,))
                db.execute("DELETE FROM sessions WHERE id=?", (session,))

    def _commit_staged(self, db: sqlite3.Connection, session: int) -> None:
        """Fold ``session``'s staged runs into ``chunks`` (inside `commit_point`)."""
        if not self._has_table("session_chunks"):
            return
        db.execute(
            "INSERT INTO chunks(hash, refs, size, stored) SELECT hash, runs, size, stored "
            "FROM session_chunks WHERE session_id=? AND runs > 0 "
            "ON CONFLICT(hash) DO UPDATE SET refs = refs + excluded.refs, "
            "size = MAX(size, excluded.size), stored = MAX(stored, excluded.stored)",
            (session,))
        db.execute("DELETE FROM session_chunks WHERE session_id=?", (session,))

    def _has_table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM main.sqlite_master WHERE type='table' "
                               "AND name=?", (name,)).fetchone() is not None

    def record_origin(self, origin: str, point_id: str) -> None:
        """Remember what made ``point_id`` (an appliance upload's id), inside the caller's
        commit: a retried commit of the same upload then finds this point."""
        with self.transaction() as db:
            db.execute("INSERT INTO point_origins(origin, point_id) VALUES(?, ?)",
                       (origin, point_id))

    def point_by_origin(self, origin: str) -> RecoveryPoint | None:
        row = self.db.execute("SELECT point_id FROM point_origins WHERE origin=?",
                              (origin,)).fetchone()
        return self.point(row[0]) if row else None

    def abandon_session(self, session: int) -> None:
        """Drop a session that will not commit; what only it pinned becomes free space."""
        with self.transaction() as db:
            hashes = [r[0] for r in db.execute(
                "SELECT hash FROM pins WHERE session_id=?", (session,))]
            db.execute("DELETE FROM pins WHERE session_id=?", (session,))
            if self._has_table("session_chunks"):
                db.execute("DELETE FROM session_chunks WHERE session_id=?", (session,))
            db.execute("DELETE FROM sessions WHERE id=?", (session,))
            self._free_unreferenced(db, hashes)

    def unclaimed_pins(self, session: int) -> list[bytes]:
        """Chunks pinned by ``session`` alone and not committed: only it wrote them."""
        return [r[0] for r in self.db.execute(
            "SELECT p.hash FROM pins p WHERE p.session_id=? "
            "AND NOT EXISTS (SELECT 1 FROM chunks c WHERE c.hash = p.hash) "
            "AND NOT EXISTS (SELECT 1 FROM pins o WHERE o.hash = p.hash AND o.session_id != ?)",
            (session, session))]

    def dead_sessions(self, volume_id: int) -> list[int]:
        """Sessions of a volume whose lock we hold: their processes are gone."""
        return [r[0] for r in self.db.execute(
            "SELECT id FROM sessions WHERE volume_id=?", (volume_id,))]

    # -- damage --------------------------------------------------------------------------

    def note_bad(self, found: dict[bytes, str]) -> bool:
        """Quarantine ``found`` (chunk: what is wrong); returns whether it was recorded.

        Any thread may call this, in the middle of anything (a restore's reading thread,
        a delete's open transaction): it uses its own short-lived connection and gives up
        after a second rather than wait on a writer, or when the disk is full; the caller
        keeps what was not recorded and tries again later.
        """
        try:
            db = sqlite3.connect(self.path, timeout=1.0, isolation_level=None)
        except sqlite3.Error:
            return False
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO bad_chunks(hash, reason, found) VALUES(?, ?, ?) "
                "ON CONFLICT(hash) DO UPDATE SET reason = excluded.reason, healed = NULL",
                ((h, why, time.time()) for h, why in found.items()))
            db.execute("COMMIT")
            return True
        except sqlite3.Error:
            return False
        finally:
            db.close()

    def bad_chunks(self) -> dict[bytes, str]:
        """Chunks quarantined and not healed since, with what was wrong; only those some
        point still counts (a quarantine outlives the chunk when its points are deleted)."""
        return dict(self.db.execute(
            "SELECT b.hash, b.reason FROM bad_chunks b JOIN chunks c ON c.hash = b.hash "
            "WHERE b.healed IS NULL"))

    def healed_chunks(self) -> list[bytes]:
        return [r[0] for r in self.db.execute(
            "SELECT hash FROM bad_chunks WHERE healed IS NOT NULL")]

    def mark_healed(self, hashes: list[bytes]) -> None:
        """A fresh copy of each of ``hashes`` is durable (a backup or a repair wrote it)."""
        with self.transaction() as db:
            db.executemany("UPDATE bad_chunks SET healed = ? WHERE hash = ?",
                           ((time.time(), h) for h in hashes))

    def clear_bad(self, hashes: list[bytes]) -> None:
        """Forget the quarantine of chunks found good again (verify re-read them). On a
        full disk or read-only they stay quarantined: the next verify reads them again."""
        if not hashes:
            return
        with contextlib.suppress(StorageFull, ReadOnlyRepository), self.transaction() as db:
            db.executemany("DELETE FROM bad_chunks WHERE hash = ?", ((h,) for h in hashes))

    # -- deletion ------------------------------------------------------------------------

    def delete_point(self, point: RecoveryPoint, decrements: Counter[bytes]) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM points WHERE id=?", (point.id,))
            db.executemany("UPDATE chunks SET refs = refs - ? WHERE hash=?",
                           ((n, h) for h, n in decrements.items()))
            self._free_unreferenced(db, list(decrements))

    def forget_points(self, point_ids: Iterable[str]) -> None:
        """Drop point rows without touching counts (a `recount` follows)."""
        with self.transaction() as db:
            db.executemany("DELETE FROM points WHERE id=?", ((p,) for p in point_ids))

    def add_runs(self, counts: Counter[bytes]) -> None:
        """Add runs to chunks (rows of unknown size for new ones): a cloud cache that
        starts counting a volume it learnt from its records (`cloud_counts.settle`)."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO chunks(hash, refs, size, stored) VALUES(?, ?, 0, 0) "
                "ON CONFLICT(hash) DO UPDATE SET refs = refs + excluded.refs",
                counts.items())

    def recount(self, expected: Counter[bytes]) -> None:
        """Set every chunk's count to ``expected``; what drops out is queued to be freed."""
        with self.transaction() as db:
            db.execute("UPDATE chunks SET refs = 0")
            db.executemany(
                "INSERT INTO chunks(hash, refs, size, stored) VALUES(?, ?, 0, 0) "
                "ON CONFLICT(hash) DO UPDATE SET refs = excluded.refs",
                expected.items())
            zero = [r[0] for r in db.execute("SELECT hash FROM chunks WHERE refs = 0")]
            self._free_unreferenced(db, zero)

    def _free_unreferenced(self, db: sqlite3.Connection, hashes: list[bytes]) -> None:
        """Queue for deletion the chunks among ``hashes`` that no run and no pin holds."""
        free = self._unclaimed(db, hashes, "SELECT hash FROM chunks WHERE refs > 0 AND hash IN")
        db.executemany("DELETE FROM chunks WHERE hash=?", ((h,) for h in free))
        db.executemany("INSERT OR IGNORE INTO pending_free(hash) VALUES(?)", ((h,) for h in free))

    @staticmethod
    def _unclaimed(db: sqlite3.Connection, hashes: list[bytes], claimed: str) -> list[bytes]:
        """Of ``hashes``, those that neither the ``claimed`` query nor a pin names; asked
        500 at a time, since a delete may free thousands."""
        taken: set[bytes] = set()
        for part in _chunked(hashes):
            marks = f"({','.join('?' * len(part))})"
            taken.update(r[0] for r in db.execute(f"{claimed} {marks}", part))
            taken.update(r[0] for r in db.execute(
                f"SELECT hash FROM pins WHERE hash IN {marks}", part))
        return [h for h in hashes if h not in taken]

    def pending_free(self) -> list[bytes]:
        return [r[0] for r in self.db.execute("SELECT hash FROM pending_free")]

    def still_free(self, hashes: list[bytes]) -> list[bytes]:
        """Of ``hashes``, those that no row and no pin has claimed again since."""
        with self.transaction(durable=False) as db:  # one lock for all the lookups
            return self._unclaimed(db, hashes, "SELECT hash FROM chunks WHERE hash IN")

    def forget_pending(self, hashes: Iterable[bytes]) -> None:
        """Called once the backend has durably dropped ``hashes``. Not fsynced: if a power
        cut loses this, the next reclaim deletes them again, which finds nothing to do."""
        with self.transaction(durable=False) as db:
            db.executemany("DELETE FROM pending_free WHERE hash=?", ((h,) for h in hashes))

    # -- screenshot verifications -------------------------------------------------------

    def record_verification(self, v: Verification) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO verifications(point_id, status, reason, ocr_text,"
                       " screenshot, seconds, at) VALUES(?, ?, ?, ?, ?, ?, ?)",
                       (v.point_id, v.status, v.reason, v.ocr_text, v.screenshot, v.seconds,
                        v.at))

    def verifications(self) -> dict[str, Verification]:
        rows = self.db.execute("SELECT point_id, status, reason, ocr_text, screenshot, seconds, "
                               "at FROM verifications")
        return {r[0]: Verification(*r) for r in rows}

    def last_verifications(self) -> dict[str, Verification]:
        """Per volume name: the most recent screenshot verification of any of its points."""
        rows = self.db.execute(
            "SELECT v.name, x.point_id, x.status, x.reason, x.ocr_text, x.screenshot, "
            "x.seconds, MAX(x.at) FROM verifications x JOIN points p ON p.id = x.point_id "
            "JOIN volumes v ON v.id = p.volume_id GROUP BY v.id")
        return {r[0]: Verification(*r[1:]) for r in rows}

    # -- clones (the folders are `clones.py`'s) --------------------------------------------

    def add_clone(self, name: str, point_id: str, created: float) -> bool:
        """Record a clone; False when the name is taken."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM clones WHERE name=?", (name,)).fetchone():
                return False
            db.execute("INSERT INTO clones(name, point_id, created) VALUES(?, ?, ?)",
                       (name, point_id, created))
        return True

    def clones(self, point_id: str | None = None,
               name: str | None = None) -> list[tuple[str, str, float]]:
        """``(name, point id, created)`` of every clone, or of one point's, or the named one."""
        sql = "SELECT name, point_id, created FROM clones"
        if point_id is not None:
            return self.db.execute(sql + " WHERE point_id=? ORDER BY created",
                                   (point_id,)).fetchall()
        if name is not None:
            return self.db.execute(sql + " WHERE name=?", (name,)).fetchall()
        return self.db.execute(sql + " ORDER BY created").fetchall()

    def remove_clone(self, name: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM clones WHERE name=?", (name,))

    # -- accounting ----------------------------------------------------------------------

    def held_chunks(self, hashes: list[bytes]) -> set[bytes]:
        """Those of ``hashes`` the catalog holds: a few queries for a point's thousands of
        chunks (one each cost a first replication 0.2 s of its start)."""
        held: set[bytes] = set()
        for part in _chunked(hashes):
            marks = ",".join("?" * len(part))
            held.update(r[0] for r in self.db.execute(
                f"SELECT hash FROM chunks WHERE hash IN ({marks})", part))
        return held

    def pinned(self) -> list[bytes]:
        """Every chunk a backup in progress (or a dead one) has pinned."""
        return [r[0] for r in self.db.execute("SELECT hash FROM pins")]

    def chunk_refs(self) -> dict[bytes, int]:
        return dict(self.db.execute("SELECT hash, refs FROM chunks").fetchall())

    def chunk_sizes(self, hashes: list[bytes]) -> dict[bytes, tuple[int, int]]:
        """``(plain size, stored bytes)`` of those of ``hashes`` the catalog holds with
        known sizes (a recount adds rows whose sizes it does not know: left out)."""
        found: dict[bytes, tuple[int, int]] = {}
        for part in _chunked(hashes):
            marks = ",".join("?" * len(part))
            found.update((r[0], (r[1], r[2])) for r in self.db.execute(
                f"SELECT hash, size, stored FROM chunks WHERE hash IN ({marks}) AND size > 0",
                part))
        return found

    def chunk_totals(self) -> ChunkTotals:
        """How many chunks, their plain and stored bytes, and how many sizes are unknown."""
        row = self.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(stored), 0), "
            "COALESCE(SUM(size = 0), 0), COALESCE(SUM(stored = 0), 0) FROM chunks"
        ).fetchone()
        return ChunkTotals(*row)

    def unsized_chunks(self) -> list[bytes]:
        """Chunks whose stored size this catalog does not know (a cloud cache learnt them
        with a point another node sent)."""
        return [r[0] for r in self.db.execute("SELECT hash FROM chunks WHERE stored = 0")]

    def learn_stored(self, stored: dict[bytes, int]) -> None:
        """Record stored sizes read from a bucket listing (`Cloud.sync`); known ones stay."""
        with self.transaction() as db:
            db.executemany("UPDATE chunks SET stored = ? WHERE hash = ? AND stored = 0",
                           ((n, h) for h, n in stored.items()))

    def learn_plain(self, sizes: dict[bytes, int]) -> None:
        """Record sizes before compression read from pack indexes (`Cloud.learn_sizes`);
        known ones stay."""
        with self.transaction() as db:
            db.executemany("UPDATE chunks SET size = ? WHERE hash = ? AND size = 0",
                           ((n, h) for h, n in sizes.items()))

    def stored_if_released(self, releases: Counter[bytes]) -> int | None:
        """Stored bytes of the chunks that losing ``releases`` (chunk: runs ending) would
        leave with no run and no pin: what a delete would free now. None when this catalog
        does not know a stored size (a chunk missing from a cloud's listing)."""
        total = 0
        hashes = list(releases)
        for part in _chunked(hashes):
            marks = ",".join("?" * len(part))
            pinned = {r[0] for r in self.db.execute(
                f"SELECT hash FROM pins WHERE hash IN ({marks})", part)}
            for digest, refs, stored in self.db.execute(
                    f"SELECT hash, refs, stored FROM chunks WHERE hash IN ({marks})",
                    part):
                if refs <= releases[digest] and digest not in pinned:
                    if not stored:
                        return None
                    total += stored
        return total

    def integrity_check(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]
