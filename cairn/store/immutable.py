"""Immutable cloud points: S3 Object Lock on every object a point needs, extended by generation.

With an immutability period P (``--immutable 30d``) a point published at time t cannot be
deleted by anyone before t + P, root on the appliance with the bucket's credentials
included: its record, every object holding a chunk its block map reaches (data chunks and
interior nodes: their packs and the packs' indexes, `cloud_packs`, or a legacy chunk's own
object) and the repository's ``config.json`` are under COMPLIANCE retention
(`s3_lock.Retention`). A pack is uploaded locked (no request beyond its PUT), and a point
that reuses chunks of an older pack extends that pack, once per generation.

Chunks are shared by many points, so giving each point its own date would extend the same
chunk at every backup. Time is cut into generations of length G (P by default) instead, and
whatever is locked during generation g is locked until the *horizon*
``(g + 1) * G + P``, which is at least t + P for every t in that generation. A chunk locked
to the horizon serves every point of its generation, so each chunk a point still needs is
extended at most once per generation whatever the number of backups, and a new chunk is
uploaded locked (no request beyond its PUT). The price: an object stays locked up to P + G
after the last point that needed it.

The cache knows what it locked (table ``object_locks``: name, until, covered). ``covered``
is the date until which an interior node *and everything under it* is locked, so a point
that shares a subtree with one already covered this generation skips it without looking
inside: an incremental in the same generation walks only what changed. A lost cache costs
one extension of each object again (S3 never shortens a retention; a later one is kept).

cairn obeys the same dates: a published point is locked (`marks`) until its record's
horizon, which the sealed record states too (``locked_until``, taken as a floor of the
point's lock by `cloud_marks`), so retention and delete keep it until then and remove it
by the normal path afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cairn.errors import Corruption
from cairn.store.backends.s3_lock import Retention
from cairn.store.blockmap import FANOUT, LEVELS, Tree
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO, chunk_name
from cairn.store.repository import Repository

CONFIG = "config.json"
WORKERS = 8
_BATCH = 500
_TABLE = """CREATE TABLE IF NOT EXISTS object_locks(
    name TEXT PRIMARY KEY,
    until REAL NOT NULL,
    covered REAL NOT NULL)"""


@dataclass(frozen=True)
class Immutability:
    """How long published points stay immutable (``period``, seconds) and the generation
    length that batches extensions (0: the period). ``clock`` is the time source; a bench
    replays months of backups through it."""

    period: float
    generation: float = 0.0
    clock: Callable[[], float] = field(default=time.time, compare=False)

    def horizon(self, now: float) -> float:
        """The date everything locked at ``now`` is locked until."""
        length = self.generation or self.period
        return (math.floor(now / length) + 1) * length + self.period


class Locker:
    """Locks a cloud repository's objects as its points are published; one per run."""

    def __init__(self, cloud: Repository, policy: Immutability, retention: Retention,
                 objects: Callable[[list[str]], list[str]] | None = None) -> None:
        """``objects``: the bucket objects that hold some chunk names (`CloudPacks.objects`:
        their packs and indexes); by default each name is its own object."""
        self.cloud = cloud
        self.policy = policy
        self.retention = retention
        self.objects = objects or list
        self._rows: dict[str, tuple[float, float]] = {}
        self._dirty: set[str] = set()
        cloud.catalog.db.execute(_TABLE)

    def put(self, name: str, data: bytes) -> None:
        """Upload a new object already locked to this generation's horizon."""
        until = self.policy.horizon(self.policy.clock())
        self.retention.put(name, data, until)
        self._rows[name] = (until, 0.0)
        self._dirty.add(name)

    def horizon(self) -> float:
        """The date what is published now is locked until (the record says it too)."""
        return self.policy.horizon(self.policy.clock())

    def publish(self, name: str, data: bytes, until: float) -> bool:
        """Create a point's record locked until ``until`` (`cover` locked everything it
        needs first); whether the record was new."""
        return self.retention.put(name, data, until, only_new=True)

    def cover(self, point: RecoveryPoint) -> None:
        """Extend, where they would end too soon, the locks of every object ``point`` needs."""
        now = self.policy.clock()
        need, horizon = now + self.policy.period, self.policy.horizon(now)
        tree = self.cloud.tree(point)
        self._load([chunk_name(tree.root), CONFIG])
        with ThreadPoolExecutor(WORKERS) as pool:
            if tree.root != ZERO:  # an all-zero volume needs no chunk at all
                self._walk(pool, tree, (LEVELS, 0, tree.root), need, horizon)
            self._extend(pool, [CONFIG], need, horizon)
        self._flush()

    def _walk(self, pool: ThreadPoolExecutor, tree: Tree, slot: tuple[int, int, bytes],
              need: float, horizon: float) -> float:
        """The date the subtree at ``slot`` is locked through, after extending it."""
        level, index, digest = slot
        name = chunk_name(digest)
        until, covered = self._rows.get(name, (0.0, 0.0))
        if covered >= need:
            return covered
        kids = self.cloud.nodes.children(tree, level, index, digest)
        names = [chunk_name(k) for k in kids if k != ZERO]
        self._load(names)
        if level == 1:
            below = self._extend(pool, names, need, horizon)
        else:
            below = min((self._walk(pool, tree, (level - 1, index * FANOUT + k, kid), need,
                                    horizon)
                         for k, kid in enumerate(kids) if kid != ZERO), default=math.inf)
        until = self._extend(pool, [name], need, horizon)
        self._set(name, until, min(until, below))
        return min(until, below)

    def _extend(self, pool: ThreadPoolExecutor, names: list[str], need: float,
                horizon: float) -> float:
        """Extend the objects holding ``names`` (`objects`) locked for less than ``need``
        to ``horizon``; returns the earliest date any of them is locked until."""
        held = self.objects(names)
        self._load(held)
        stale = sorted({n for n in held if self._rows.get(n, (0.0, 0.0))[0] < need})
        for name, until in zip(stale, pool.map(lambda n: self._extend_one(n, horizon), stale),
                               strict=True):
            self._set(name, until, until)
        return min((self._rows[n][0] for n in held), default=math.inf)

    def _extend_one(self, name: str, horizon: float) -> float:
        try:
            return self.retention.extend(name, horizon)
        except KeyError:
            raise Corruption(f"{name} is missing from {self.cloud.location}, so it cannot be "
                             "locked: run `cairn verify --repair-from` with the local "
                             "repository") from None

    def _set(self, name: str, until: float, covered: float) -> None:
        self._rows[name] = (until, covered)
        self._dirty.add(name)

    def _load(self, names: list[str]) -> None:
        """Read what the cache knows of ``names`` that this run has not seen yet."""
        unknown = [n for n in dict.fromkeys(names) if n not in self._rows]
        for start in range(0, len(unknown), _BATCH):
            batch = unknown[start : start + _BATCH]
            rows = self.cloud.catalog.db.execute(
                "SELECT name, until, covered FROM object_locks WHERE name IN "
                f"({','.join('?' * len(batch))})", batch)
            for name, until, covered in rows:
                self._rows[name] = (until, covered)

    def _flush(self) -> None:
        with self.cloud.catalog.transaction() as db:
            db.executemany("INSERT INTO object_locks(name, until, covered) VALUES(?, ?, ?) "
                           "ON CONFLICT(name) DO UPDATE SET until=excluded.until, "
                           "covered=excluded.covered",
                           ((n, *self._rows[n]) for n in self._dirty))
        self._dirty.clear()
        self._rows.clear()
