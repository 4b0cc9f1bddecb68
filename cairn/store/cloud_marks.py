"""A cloud repository's marks, taken so that no replay of an older record weakens them.

Each ``marks/<point id>.json`` record is sealed (`records`), so no one without the key can
forge one; but whoever can write to the bucket can put back an *older* sealed record of the
same point (S3 versioning keeps every version). Replayed, it could shorten a lock, drop a
ransomware flag, or bring back a deletion hold that `undelete` lifted. So every record
carries ``seq``, larger at each write of that point's marks, and:

- each node remembers the highest ``seq`` it has taken per point (table ``cloud_marks`` of the
  cache, owned here) and never takes a lower one over it: a replay is ignored and logged;
- in a versioned bucket the sync reads every version of each record and the highest ``seq``
  wins, so a node with an empty cache is not fooled either. In an Object Lock bucket the
  record of a locked point is itself locked until the lock's date: the newest one cannot be
  removed to make an old one win;
- a lock is never earlier than the one sealed into the point's own record (``locked_until``
  of an immutable point: under Object Lock with the record), nor than one this node knows
  still holds; flags are only ever added (detection adds them, nothing removes them).

A lock and the flags are thereby monotone whatever is replayed; the deletion hold (which
`undelete` may lift) follows the newest record. A copy of a record carried by a batch
(`cloud_batch`) is taken under these same rules: it is a sealed record like any other.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, replace

from cairn import logs
from cairn.store.marks import Marks, all_marks
from cairn.store.repository import Repository

_TABLE = """CREATE TABLE IF NOT EXISTS cloud_marks(
    point_id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL DEFAULT 0,
    record_until REAL)"""


@dataclass(frozen=True)
class Sealed:
    """One point's marks as a bucket record holds them, with the record's ``seq``."""

    marks: Marks
    seq: int


def _rows(repo: Repository) -> dict[str, tuple[int, float | None]]:
    repo.catalog.ensure_schema(_TABLE)
    rows = repo.catalog.db.execute("SELECT point_id, seq, record_until FROM cloud_marks")
    return {r[0]: (r[1], r[2]) for r in rows}


def known(repo: Repository) -> set[str]:
    """The points whose record this cache has read (their record's lock is known)."""
    return set(_rows(repo))


def records_until(repo: Repository, point_ids: Collection[str]) -> float | None:
    """The latest lock sealed into the records of ``point_ids`` that this cache has read
    (None when none is locked)."""
    rows = _rows(repo)
    return max((rows[i][1] for i in point_ids if i in rows and rows[i][1] is not None),
               default=None)


def next_seq(repo: Repository, point_id: str) -> int:
    """The ``seq`` of the next record of ``point_id``'s marks: above any seen, and a time
    in microseconds, so two nodes writing one after the other order as they wrote."""
    seen = _rows(repo).get(point_id, (0, None))[0]
    return max(seen + 1, time.time_ns() // 1000)


def note(repo: Repository, point_id: str, seq: int | None = None,
         record_until: float | None = None) -> None:
    """Remember a record of ``point_id``'s marks taken (``seq``), or its point record read
    (``record_until``: the lock sealed into it, None for none)."""
    repo.catalog.ensure_schema(_TABLE)
    with repo.catalog.transaction() as db:
        db.execute("INSERT INTO cloud_marks(point_id) VALUES(?) ON CONFLICT DO NOTHING",
                   (point_id,))
        if seq is not None:
            db.execute("UPDATE cloud_marks SET seq=MAX(seq, ?) WHERE point_id=?",
                       (seq, point_id))
        if record_until is not None:
            db.execute("UPDATE cloud_marks SET record_until=MAX(COALESCE(record_until, 0), ?) "
                       "WHERE point_id=?", (record_until, point_id))


def _one(cached: Marks | None, seen: int, found: Sealed | None, floor: float | None,
         now: float) -> tuple[Marks, int]:
    """A point's marks from what this node had, what the bucket holds and its record."""
    if found is not None and found.seq >= seen:
        base, seq = found.marks, found.seq
    elif found is None and seen == 0:
        base, seq = Marks(), 0  # never had a record here (or only one from before seq)
    else:
        base, seq = cached or Marks(), seen
    dates = [d for d in (base.locked_until, floor if floor and floor > now else None,
                         cached.locked_until if cached and cached.locked(now) else None)
             if d is not None]
    flags = tuple(dict.fromkeys(base.flags + (cached.flags if cached else ())))
    return replace(base, locked_until=max(dates) if dates else None, flags=flags), seq


def merge(repo: Repository, found: dict[str, Sealed], where: str,
          only: Collection[str] | None = None) -> dict[str, Marks]:
    """Every point's marks once the bucket's ``found`` are taken (see the module's rules),
    or only those of the points ``only`` names (``found`` then holds just theirs: an
    incremental sync); the seq each was taken at is remembered. For `marks.replace_marks`."""
    now = time.time()
    cached = all_marks(repo)
    rows = _rows(repo)
    merged: dict[str, Marks] = {}
    taken: list[tuple[int, str]] = []
    for point_id in cached.keys() | found.keys() | rows.keys() if only is None else only:
        seen, floor = rows.get(point_id, (0, None))
        marks, seq = _one(cached.get(point_id), seen, found.get(point_id), floor, now)
        got = found.get(point_id)
        if (got.seq if got else 0) < seen:
            logs.event("cloud.marks_replay_ignored", point=point_id, where=where, seen=seen,
                       found=got.seq if got else None)
        merged[point_id] = marks
        if seq > seen:
            taken.append((seq, point_id))
    if taken:
        with repo.catalog.transaction() as db:
            db.executemany("UPDATE cloud_marks SET seq=MAX(seq, ?) WHERE point_id=?", taken)
            db.executemany("INSERT INTO cloud_marks(point_id, seq) VALUES(?, ?) "
                           "ON CONFLICT DO NOTHING", ((p, s) for s, p in taken))
    return merged
