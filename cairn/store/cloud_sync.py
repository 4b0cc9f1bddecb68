"""What a cloud repository's cache remembers between syncs, and the feed that makes them cheap.

Every object a writer puts or removes that other nodes' caches must learn (a point record,
a tombstone, a marks record, a machine point record) is announced, once it is in place, by
an empty object in ``feed/`` whose name says which (`entry`)::

    feed/<key>.put~points~web01-sda~<point id>.json
    feed/<key>.put~removed~web01-sda~<point id>_<created µs>_<mac>
    feed/<key>.del~machines~web01~<machine point id>.json

``<key>`` is a `cloud_feed.new_key`, so a sync lists only the entries after its cursor
(`cloud_feed.since`): with nothing new that is one request, whatever the number of points.
Entries are hints, never trusted: a sync reads (and authenticates) the object an entry
names, and takes a removal only once a HEAD says the object is gone. An entry inside the
listing window comes back at the next sync; the names already handled are remembered
(``cloud_feed_seen``) so it costs nothing twice.

Why nothing is missed: an entry is written after its object, so whoever sees the entry sees
the object (S3's read-after-write). An entry lands within `cloud_feed.WINDOW` of its key's
time (clock skew + one PUT), so a listing after ``cursor - WINDOW`` sees every entry newer
than what the cache took. Listing that whole window at every sync would cost one request per
thousand entries of the last quarter hour (1.4 s with 10,000 fresh ones), so most syncs
list only after the newest entry taken (the *tail*: one request when nothing is new), and a
*windowed* listing runs once every `rescan_every` seconds, from the cursor the previous
windowed listing ended at, less the window. Consecutive windowed listings thus overlap by
the window: an entry that landed behind the tail (a slow PUT, a clock behind) is taken by
the next windowed listing, at most `rescan_every` later than a listing of the window each
time would have taken it. What the feed cannot announce (a writer that died between its
object and its entry, a cairn without the feed, a stall longer than the window, an object
removed behind cairn's back) a full sync finds: the first sync of a cache, then one every
`full_every` seconds, lists ``points/``, ``marks/``, ``removed/`` and ``machines/`` whole.
The feed is kept `FEED_KEEP` (far longer than `full_every`), so a cache whose cursor is
older than what was trimmed always syncs in full first.

A sync that had to read many records one by one also writes a *batch*, one feed object
carrying the sealed records of the recent points (``feed/<key>.batch~<first key>``,
`cloud_batch`): the syncs of other nodes read it instead of a record each. A batch is named
here (`batch_name`, `Batch`) because it lives in the feed and is trimmed with it; a cairn
without batches skips its name (`parse` answers None).

This module owns its tables in the cache catalog: ``cloud_sync`` (cursor and the time of
the last full sync), ``cloud_feed_seen`` and ``cloud_removed`` (the tombstones known, which
replication reads instead of listing ``removed/`` at every run).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cairn.store import cloud_feed
from cairn.store.repository import Repository

FEED = "feed"
RESCAN = 300.0
"""Default seconds between windowed listings of the feed (`rescan_every`)."""
FEED_KEEP = 7 * 86400.0
"""Feed entries older than this may be deleted (`trim`): every cache syncs in full sooner."""

_TABLES = """CREATE TABLE IF NOT EXISTS cloud_sync(name TEXT PRIMARY KEY, value REAL);
CREATE TABLE IF NOT EXISTS cloud_feed_seen(name TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cloud_removed(
    id TEXT PRIMARY KEY, volume TEXT NOT NULL, created REAL NOT NULL)"""

_OPS = ("put", "del")
BATCH = "batch"
_TARGET = re.compile(r"^(points|removed|marks|machines)/[A-Za-z0-9._/-]{1,400}$")


def full_every() -> float:
    """Seconds between full syncs of one cache (``CAIRN_CLOUD_FULL_SYNC_SECONDS``)."""
    return float(os.environ.get("CAIRN_CLOUD_FULL_SYNC_SECONDS") or 86400)


def rescan_every() -> float:
    """Seconds between windowed listings of the feed (``CAIRN_CLOUD_FEED_RESCAN_SECONDS``);
    the syncs between them list only after the newest entry taken."""
    return float(os.environ.get("CAIRN_CLOUD_FEED_RESCAN_SECONDS") or RESCAN)


def entry(key: str, op: str, name: str) -> str:
    """The feed object announcing that ``name`` was put or removed (``op``)."""
    assert op in _OPS and "~" not in name
    return f"{FEED}/{key}.{op}~{name.replace('/', '~')}"


@dataclass(frozen=True)
class Entry:
    name: str
    """the feed object's own name"""
    op: str
    target: str
    """the object it announces"""


def parse(name: str) -> Entry | None:
    """The entry a feed object's name states, or None for a name cairn never writes (the
    feed is only a hint: such a name is skipped, not an error)."""
    leaf = name.removeprefix(f"{FEED}/")
    key, _, rest = leaf.partition(".")
    op, _, target = rest.partition("~")
    target = target.replace("~", "/")
    if "/" in leaf or not cloud_feed.KEY.match(key) or op not in _OPS or \
            not _TARGET.match(target) or "/../" in f"/{target}/":
        return None
    return Entry(name, op, target)


@dataclass(frozen=True)
class Batch:
    """A batch's name and the keys of the feed entries (and indexes) it may carry:
    ``first`` (its writer's start) to its own key ``last`` (no earlier than any key it
    carries)."""

    name: str
    first: str
    last: str

    def spans(self, entry_name: str) -> bool:
        return self.first <= entry_key(entry_name) <= self.last


def entry_key(name: str) -> str:
    """The key of a feed object's name."""
    return name.removeprefix(f"{FEED}/").partition(".")[0]


def batch_name(key: str, first: str) -> str:
    """The batch written at ``key`` carrying entries from key ``first`` on."""
    assert cloud_feed.KEY.match(key) and cloud_feed.KEY.match(first) and first <= key
    return f"{FEED}/{key}.{BATCH}~{first}"


def parse_batch(name: str) -> Batch | None:
    """The batch a feed object's name states, or None (an entry, or a name cairn never
    writes)."""
    key, _, rest = name.removeprefix(f"{FEED}/").partition(".")
    op, _, first = rest.partition("~")
    if op != BATCH or not cloud_feed.KEY.match(key) or not cloud_feed.KEY.match(first) \
            or first > key or "/" in name.removeprefix(f"{FEED}/"):
        return None
    return Batch(name, first, key)


@dataclass
class State:
    cursor: float | None
    """the newest writer time of the feed taken (`cloud_feed.newest`); None: sync in full"""
    full_at: float
    """this host's time of the last full sync"""
    scan_from: float | None = None
    """the cursor the last windowed listing ended at (the next lists from it less the
    window); None: from ``cursor``"""
    scan_at: float = 0.0
    """this host's time of the last windowed listing (0: the next sync makes one)"""

    def due_full(self, now: float) -> bool:
        return self.cursor is None or not 0 <= now - self.full_at < full_every()

    def due_scan(self, now: float) -> bool:
        return not 0 <= now - self.scan_at < rescan_every()

    def after_full(self, cursor: float, now: float) -> None:
        """A full sync listed everything up to ``cursor``: the next sync lists the window."""
        self.cursor, self.full_at, self.scan_from, self.scan_at = cursor, now, cursor, 0.0

    def scanned(self, cursor: float | None, now: float) -> None:
        self.cursor, self.scan_from, self.scan_at = cursor, cursor, now


_STATE = ("cursor", "full_at", "scan_from", "scan_at")


def load(repo: Repository) -> State:
    repo.catalog.ensure_schema(_TABLES)
    rows = dict(repo.catalog.db.execute("SELECT name, value FROM cloud_sync"))
    return State(rows.get("cursor"), rows.get("full_at") or 0.0, rows.get("scan_from"),
                 rows.get("scan_at") or 0.0)


def save(repo: Repository, state: State) -> None:
    with repo.catalog.transaction() as db:
        db.executemany("INSERT OR REPLACE INTO cloud_sync(name, value) VALUES(?, ?)",
                       ((name, getattr(state, name)) for name in _STATE))


def tail(repo: Repository) -> str | None:
    """The newest feed entry this cache took: a sync between windowed listings lists
    only after it."""
    return repo.catalog.db.execute("SELECT MAX(name) FROM cloud_feed_seen").fetchone()[0]


def newest_batch(repo: Repository) -> str | None:
    """The newest batch this cache listed lately (by name, so by key)."""
    return repo.catalog.db.execute(
        "SELECT MAX(name) FROM cloud_feed_seen WHERE name LIKE ?",
        (f"{FEED}/%.{BATCH}~%",)).fetchone()[0]


def batches_seen(repo: Repository, since: float) -> list[Batch]:
    """The batches this cache listed lately whose key is ``since`` or later."""
    rows = repo.catalog.db.execute(
        "SELECT name FROM cloud_feed_seen WHERE name LIKE ? AND at >= ?",
        (f"{FEED}/%.{BATCH}~%", since))
    return [b for b in (parse_batch(row[0]) for row in rows) if b is not None]


def unseen(repo: Repository, entries: list[Entry]) -> list[Entry]:
    """The entries this cache has not handled yet (those of the window come again)."""
    if not entries:
        return []
    seen = {row[0] for row in repo.catalog.db.execute(
        "SELECT name FROM cloud_feed_seen WHERE name >= ?", (min(e.name for e in entries),))}
    return [e for e in entries if e.name not in seen]


def note_seen(repo: Repository, names: Iterable[str], state: State) -> None:
    """Remember the feed objects ``names`` (entries, batches) as handled; forget those no
    windowed listing lists again."""
    with repo.catalog.transaction() as db:
        db.executemany("INSERT OR IGNORE INTO cloud_feed_seen(name, at) VALUES(?, ?)",
                       ((name, cloud_feed.name_time(name)) for name in names))
        marks = [t for t in (state.cursor, state.scan_from) if t is not None]
        if marks:
            db.execute("DELETE FROM cloud_feed_seen WHERE at < ?",
                       (min(marks) - 2 * cloud_feed.WINDOW,))


def removed(repo: Repository) -> list[tuple[str, str, float]]:
    """``(point id, volume, created)`` of every tombstone the last syncs found."""
    repo.catalog.ensure_schema(_TABLES)
    return list(repo.catalog.db.execute("SELECT id, volume, created FROM cloud_removed"))


def learn_removed(repo: Repository, found: Iterable[tuple[str, str, float]],
                  every: bool = False) -> None:
    """Add tombstones; ``every``: ``found`` is a full listing and replaces what was known."""
    with repo.catalog.transaction() as db:
        if every:
            db.execute("DELETE FROM cloud_removed")
        db.executemany("INSERT OR REPLACE INTO cloud_removed(id, volume, created) "
                       "VALUES(?, ?, ?)", found)


def trim(bucket: cloud_feed.Listable, delete: Callable[[list[str]], None], now: float) -> int:
    """Delete the feed entries and batches older than `FEED_KEEP` by their key (a writer's
    chore at its full sync); the listing stops at the first younger one. Returns how many
    went."""
    old = []
    for name, _stamp in bucket.stamps(FEED):
        if parse(name) is None and parse_batch(name) is None:
            continue  # not cairn's: left alone
        if cloud_feed.name_time(name) > now - FEED_KEEP:
            break
        old.append(name)
    delete(old)
    return len(old)
