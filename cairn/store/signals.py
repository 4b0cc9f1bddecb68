"""Block signals of points, kept for `insights.ransomware`: this module owns their table.

For each point checked, how many blocks changed since the point before, how many of those
turned from compressible to incompressible, and how many are now incompressible at all.
A volume's recent signals are its habit, against which a new point's are judged.

A point's signals go with it: a trigger deletes them in the statement that deletes the
point's row, so every deletion (`delete`, a prune, a cloud cache forgetting points) drops
them in its own transaction without knowing this table. Repositories whose signals were
kept before the trigger existed lose their orphans when it is made.
"""

from __future__ import annotations

from dataclasses import dataclass

from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository

_TABLE = """CREATE TABLE IF NOT EXISTS point_signals(
    point_id TEXT PRIMARY KEY,
    volume_id INTEGER NOT NULL,
    changed_blocks INTEGER NOT NULL,
    turned_blocks INTEGER NOT NULL,
    dense_blocks INTEGER NOT NULL DEFAULT 0)"""
_GONE_WITH_POINT = """CREATE TRIGGER IF NOT EXISTS point_signals_gone AFTER DELETE ON points
    BEGIN DELETE FROM point_signals WHERE point_id = OLD.id; END"""


@dataclass(frozen=True)
class Signals:
    changed_blocks: int
    turned_blocks: int
    dense_blocks: int


def ensure(repo: Repository) -> None:
    """The table, with the dense column that points recorded before it lack, and the
    trigger that removes a point's signals with it."""
    db = repo.catalog.db
    db.execute(_TABLE)
    if "dense_blocks" not in {row[1] for row in db.execute("PRAGMA table_info(point_signals)")}:
        db.execute("ALTER TABLE point_signals ADD COLUMN dense_blocks INTEGER NOT NULL "
                   "DEFAULT 0")
    if db.execute("SELECT 1 FROM sqlite_master WHERE type='trigger' AND "
                  "name='point_signals_gone'").fetchone() is None:
        with repo.catalog.transaction() as tx:
            tx.execute(_GONE_WITH_POINT)
            tx.execute("DELETE FROM point_signals WHERE point_id NOT IN (SELECT id FROM points)")


def recent(repo: Repository, point: RecoveryPoint, min_changed: int, count: int
           ) -> list[Signals]:
    """The last ``count`` signals of ``point``'s volume, other than its own, of points
    that changed at least ``min_changed`` blocks."""
    rows = repo.catalog.db.execute(
        "SELECT changed_blocks, turned_blocks, dense_blocks FROM point_signals WHERE "
        "volume_id=? AND point_id != ? AND changed_blocks >= ? ORDER BY rowid DESC LIMIT ?",
        (point.volume_id, point.id, min_changed, count)).fetchall()
    return [Signals(*row) for row in rows]


def record(repo: Repository, point: RecoveryPoint, signals: Signals) -> None:
    with repo.catalog.transaction() as db:
        db.execute("INSERT OR REPLACE INTO point_signals(point_id, volume_id, changed_blocks, "
                   "turned_blocks, dense_blocks) VALUES(?, ?, ?, ?, ?)",
                   (point.id, point.volume_id, signals.changed_blocks, signals.turned_blocks,
                    signals.dense_blocks))
