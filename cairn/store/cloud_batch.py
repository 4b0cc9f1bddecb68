"""Batches: one object carrying the sealed records of many points, read by a sync in one GET.

(Records here are point records, marks records and machine point records alike: each is
announced by a feed entry, and a batch carries it under that entry's name.)

A sync learns a point another appliance published by reading its record (`cloud_sync`):
one GET per point, at every node. With a fleet on one repository that is every point of
the fleet at every node, and it grows with the fleet. So a sync that had to read at least
`BATCH_MIN` records one by one, and has seen no batch younger than `BATCH_EVERY`, writes,
after it, a *batch*: one feed object
``feed/<key>.batch~<first key>`` carrying the records its cache holds (read at its syncs,
or published by itself: `remember`) from its *start* on (`_start`): `OVERLAP` before the
newest batch it saw (a *link*), or the last `SPAN` (a *long* batch) when it saw no long
batch in the last `LEVEL` seconds; ``<first key>`` is the start's. Another node's next
sync lists the batches with the entries (one listing, as before), reads the newest one,
and older ones while an entry it wants lies in their span (``first`` to ``key``), and
reads one by one only the records no batch carries (`gather`). Whatever the fleet's size,
a sync then costs about one batch (at most the links since the newest long batch and that
one, for a node further behind) plus the few records published since the newest batch,
where it cost one GET per point published between two of its syncs. A PUT costs what a
dozen GETs do (AWS S3), so batches are written at most about once every `BATCH_EVERY`
across the fleet, not at every sync: the records published since the newest batch are
read one by one. Nodes syncing at once all decide to write before any of them has; so a
writer waits a random moment of up to `JITTER`, then lists the feed's last `BATCH_EVERY`
once more right before its PUT and writes nothing if a batch landed there meanwhile
(`_written_meanwhile`; two PUTs a listing apart may still both land). 8 nodes syncing 12
new points at once, 6 rounds: 48 batches before, 10-17 with the listing alone, 6 with
the wait too.

Why links, and long batches now and then: the batch a link follows already carries what
came before it, and a reader further behind lists the earlier batches too (every batch
newer than its cursor is in its listing, as are the entries) and reads them, back to the
newest long one, which holds the hour before it. A record a link lacks (one whose entry
landed behind its writer's view, or one the batch before lacked) costs a reader one GET,
never a point: only GETs ride on batches. The overlap covers the usual gaps: the entries
published while the previous writer's sync ran (its key is taken after its listing) and
those that landed a few seconds late. When every batch carried the last `SPAN`, with a
batch every `BATCH_EVERY` seconds each re-sent an hour of records and up to `INDEX_BYTES`
of index texts that every reader held; now a batch in `LEVEL / BATCH_EVERY` does.

Every node also reads every new pack index once (a writer dedups against what the others
stored, `cloud_packs`): a batch carries the indexes its writer holds from the same start
too (their sealed JSON, up to `INDEX_BYTES`, the newest), and its key is no earlier than
any it carries, indexes included; the reader `offer`s them to its packs, so
its next `refresh` opens them in place of their GETs, for the names its listing shows.

The object is zstd of the sealed JSON ``{repository, batch: <its own name>, records:
{<feed entry name>: <the record's bytes as read>, <index/<id>>: <the index's sealed
JSON>}}``.

Why nothing changes for correctness:

- A batch is a copy, never a source of points: a sync takes a point only for an entry its
  listing shows now (written after the record, as before); the batch only saves the GET.
  Each record in it is opened as one read from ``points/`` (`Cloud._open_record`: sealed,
  bound to its name and this repository), each marks record as one read from ``marks/``
  (`Cloud._open_marks`), each machine point record as one from ``machines/``
  (`cloud_machines.read_record`), each index as one read from ``index/``, only
  for an index the reader listed (a batch never makes a pack known), and the batch is
  sealed as a whole and bound to its name: one that fails, or any trouble reading it, is
  skipped and what it carries is read one by one. Nothing relies on batches.
- A batch may carry the record of a point deleted since (a GET would have missed it). A
  record is taken from a batch only for a point whose tombstone the cache does not know;
  if the tombstone's entry is not taken yet, the point stays listed until it is (a HEAD
  confirms the record gone), as a record read just before a delete does today. Its data
  outlives it by the grace period (`cloud.py`, rule 2). Likewise the marks of a point
  whose tombstone the cache knows, and a machine point record whose removal (a ``del``
  entry) is in the same listing, are read, never taken from a batch.
- A marks record is written again at each change (a new ``seq``): the copy taken is the
  one carried for the newest entry of that record the listing shows, else it is read. A
  copy older than the record now in the bucket is what a GET made just before the last
  write would have returned: its ``seq`` is lower, so the newer record wins when its entry
  is taken, and a replayed copy loses as a replayed record does (`cloud_marks`).
- The indexes of packs whose points are not published yet (what a writer's plan meets,
  `CloudPacks.refresh`) are taken from the batches its node's last sync listed, when at
  least `BATCH_MIN` of them are new and a batch's span may hold them (`may_carry_index`),
  each batch read once per sync: again only for names the refresh's own listing shows,
  each opened as one read. An index never changes once put (its pack's id is a fresh key;
  it is put once, after its pack; repairs and repacks write new packs), so the copy is the
  bytes a GET made at the listing would have returned: the pack was complete then, as a
  writer relying on it needs (`cloud.py`, rule 1).
- A killed writer loses and duplicates nothing: a batch is one PUT (whole or absent),
  made after the records and entries it carries, which stay where they were. A record
  carried twice adds one point (its id is the catalog's key).
- Object Lock stays on the records under ``points/``; a batch is a copy, trimmed with the
  feed (`cloud_sync.trim`). A cairn without batches skips their names, and a repository
  without batches is read record by record.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from cairn import logs
from cairn.errors import CairnError, Corruption
from cairn.store import cloud_feed, cloud_sync
from cairn.store.cloud_packs import inflate
from cairn.store.records import Sealer
from cairn.store.repository import Repository

if TYPE_CHECKING:
    from cairn.store.cloud import Cloud

Opened = TypeVar("Opened")


BATCH_MIN = 4
"""records read one by one at a sync that make it write a batch (`batch_min`)"""
BATCH_EVERY = 10.0
"""seconds (by the batches' keys) a node waits after the newest batch it saw before
writing another (`batch_every`)"""
SPAN = 3600.0
"""seconds of records a batch carries at most (the first of a chain): a node syncing at
least this often finds every record it wants in batches"""
LEVEL = 300.0
"""seconds between long batches (`batch_level`): a reader behind reads at most the links
written since the newest long batch, and that one"""
JITTER = 0.25
"""seconds a writer may wait before its last look at the feed (`batch_jitter`): nodes
syncing at once then look one after the other, and the first one's batch stops the rest"""
OVERLAP = 30.0
"""seconds before the newest batch seen that a batch starts (`batch_overlap`): the
entries its writer's sync may not have held"""
MAX_RECORDS = 4000
"""records per batch at most (the newest): about 2 MB of JSON"""
INDEX_BYTES = 4 << 20
"""bytes of index texts per batch at most (the newest; a 32 MiB pack's is about 50 kB)"""
BATCH_LIMIT = 16 << 20
"""the largest batch a reader inflates"""

_TABLE = """CREATE TABLE IF NOT EXISTS cloud_batch_records(
    entry TEXT PRIMARY KEY, at REAL NOT NULL, raw BLOB NOT NULL) WITHOUT ROWID"""


def batch_min() -> int:
    """`BATCH_MIN`, or ``CAIRN_CLOUD_BATCH_MIN`` (the torture's workers write a batch at
    nearly every sync, so that kills land inside batch writes)."""
    return int(os.environ.get("CAIRN_CLOUD_BATCH_MIN") or BATCH_MIN)


def batch_every() -> float:
    """`BATCH_EVERY`, or ``CAIRN_CLOUD_BATCH_EVERY`` seconds."""
    return float(os.environ.get("CAIRN_CLOUD_BATCH_EVERY") or BATCH_EVERY)


def batch_overlap() -> float:
    """`OVERLAP`, or ``CAIRN_CLOUD_BATCH_OVERLAP`` seconds."""
    return float(os.environ.get("CAIRN_CLOUD_BATCH_OVERLAP") or OVERLAP)


def batch_jitter() -> float:
    """`JITTER`, or ``CAIRN_CLOUD_BATCH_JITTER`` seconds (the torture's 0: its kills aimed
    at a batch write land in the PUT)."""
    return float(os.environ.get("CAIRN_CLOUD_BATCH_JITTER") or JITTER)


def batch_level() -> float:
    """`LEVEL`, or ``CAIRN_CLOUD_BATCH_LEVEL`` seconds."""
    return float(os.environ.get("CAIRN_CLOUD_BATCH_LEVEL") or LEVEL)


def due(repo: Repository, fetched: int, now: float) -> bool:
    """Whether a sync that read ``fetched`` records one by one writes a batch: enough of
    them, and the newest batch this cache saw (`cloud_sync.newest_batch`) is old enough."""
    if fetched < batch_min():
        return False
    newest = cloud_sync.newest_batch(repo)
    return newest is None or cloud_feed.name_time(newest) < now - batch_every()


def remember(repo: Repository, records: dict[str, bytes]) -> None:
    """Keep the records read or published (by feed entry name) for the batches this
    cache writes; forget those older than a batch carries."""
    repo.catalog.ensure_schema(_TABLE)
    with repo.catalog.transaction() as db:
        db.executemany("INSERT OR IGNORE INTO cloud_batch_records(entry, at, raw) "
                       "VALUES(?, ?, ?)",
                       ((e, cloud_feed.name_time(e), raw) for e, raw in records.items()))
        db.execute("DELETE FROM cloud_batch_records WHERE at < ?", (time.time() - 2 * SPAN,))


def _held(repo: Repository, since: float) -> dict[str, bytes]:
    repo.catalog.ensure_schema(_TABLE)
    rows = repo.catalog.db.execute(
        "SELECT entry, raw FROM cloud_batch_records WHERE at >= ? ORDER BY entry DESC "
        "LIMIT ?", (since, MAX_RECORDS))
    return {entry: bytes(raw) for entry, raw in rows}


def encode(sealer: Sealer, repository: str, name: str, records: dict[str, bytes]) -> bytes:
    import zstandard

    sealed = sealer.seal({"repository": repository, "batch": name,
                          "records": {e: raw.decode() for e, raw in records.items()}})
    return zstandard.ZstdCompressor(level=6).compress(json.dumps(sealed).encode())


def decode(sealer: Sealer, repository: str, name: str, raw: bytes) -> dict[str, bytes]:
    """The records a batch carries, once it is sealed and bound to ``name`` and this
    repository; `Corruption` else."""
    what = f"feed batch {name}"
    record = sealer.open(inflate(raw, what, BATCH_LIMIT), what)
    records = record.get("records")
    if record.get("repository") != repository or record.get("batch") != name \
            or not isinstance(records, dict) \
            or not all(isinstance(v, str) for v in records.values()):
        raise Corruption(f"{what} does not belong at that name in this repository")
    return {e: v.encode() for e, v in records.items() if isinstance(e, str)}


def may_carry_index(batch: cloud_sync.Batch, name: str) -> bool:
    """Whether ``batch`` may carry the index object ``name``: its writer names it from
    the first to the last key it carries, indexes included (`write`)."""
    key = name.removeprefix("index/")
    return cloud_feed.KEY.match(key) is not None and batch.first <= key <= batch.last


def gather(batches: Iterable[cloud_sync.Batch], wanted: Iterable[str],
           read: Callable[[cloud_sync.Batch], dict[str, bytes]],
           may_carry: Callable[[cloud_sync.Batch, str], bool] = cloud_sync.Batch.spans
           ) -> dict[str, bytes]:
    """What the batches read carry (records by entry name, indexes by object name): the
    newest batch first, each one read only while some of the names ``wanted`` it may carry
    (``may_carry``: by default, the entries of its span) is still missing."""
    missing = set(wanted)
    found: dict[str, bytes] = {}
    for batch in sorted(batches, key=lambda b: b.last, reverse=True):
        if not any(may_carry(batch, e) for e in missing):
            continue
        carried = read(batch)
        found = {**carried, **found}  # a newer batch's copy wins
        missing -= carried.keys()
    return found


def read(cloud: Cloud, batch: cloud_sync.Batch) -> dict[str, bytes]:
    """What ``batch`` carries; nothing when it cannot be read or opened (the records are
    then read one by one)."""
    try:
        raw = cloud.backend.get(batch.name, BATCH_LIMIT)
        return decode(cloud.sealer, cloud.repository_id, batch.name, raw)
    except KeyError:
        return {}
    except CairnError as exc:
        logs.event("cloud.batch_skipped", batch=batch.name, where=cloud.where, error=str(exc))
        return {}


def _indexes(cloud: Cloud, since: float) -> dict[str, bytes]:
    """The newest index texts the packs hold from ``since`` on, `INDEX_BYTES` at most."""
    if cloud.packs is None:
        return {}
    taken: dict[str, bytes] = {}
    size = 0
    for name, text in cloud.packs.index_texts(since, MAX_RECORDS).items():
        size += len(text)
        if size > INDEX_BYTES:
            break
        taken[name] = text
    return taken


def _start(cloud: Cloud, repo: Repository) -> float:
    """The writer time a batch carries records and indexes from: `OVERLAP` before the
    newest batch this cache saw (a link of the chain), or `SPAN` ago (a *long* batch) when
    it saw no long batch in the last `LEVEL` seconds."""
    now = cloud.clock.now()
    seen = cloud_sync.batches_seen(repo, now - batch_level())
    if not any(_long(b) for b in seen):
        return now - SPAN
    newest = max(seen, key=lambda b: b.last)
    return max(now - SPAN, cloud_feed.key_time(newest.last) - batch_overlap())


def _long(batch: cloud_sync.Batch) -> bool:
    """Whether ``batch`` carries all its writer held of the `SPAN` before its key."""
    return cloud_feed.key_time(batch.last) - cloud_feed.key_time(batch.first) >= SPAN


def _floor(since: float) -> str:
    """The lowest key of the writer time ``since``."""
    return f"{int(since * 1_000_000):014x}{'0' * 18}"


def _written_meanwhile(cloud: Cloud) -> bool:
    """Whether a batch younger than `BATCH_EVERY` is in the feed now (another node's,
    syncing at the same time); also when the listing fails (a batch only saves
    requests)."""
    start = f"{cloud_sync.FEED}/{int((cloud.clock.now() - batch_every()) * 1e6):014x}"
    try:
        return any(cloud_sync.parse_batch(name) is not None
                   for name, _ in cloud_feed.after(cloud.backend, cloud_sync.FEED, start))
    except CairnError as exc:
        logs.event("cloud.batch_not_written", where=cloud.where, error=str(exc))
        return True


def write(cloud: Cloud, repo: Repository) -> str | None:
    """Put a batch of the records and indexes this cache holds from `_start` on, after a
    random wait of up to `JITTER`; its name, or None when it holds no record, a batch
    landed meanwhile, or the PUT failed (a batch only saves requests)."""
    since = _start(cloud, repo)
    records = _held(repo, since)
    if not records:
        return None
    time.sleep(random.uniform(0, batch_jitter()))
    if _written_meanwhile(cloud):
        return None
    carried = {**records, **_indexes(cloud, since)}
    keys = [k for k in [*map(cloud_sync.entry_key, records),
                        *(n.removeprefix("index/") for n in carried)] if cloud_feed.KEY.match(k)]
    key = max(cloud_feed.new_key(cloud.clock.now()), *keys)  # never before what it carries
    name = cloud_sync.batch_name(key, _floor(since))
    try:
        cloud.backend.put(name, encode(cloud.sealer, cloud.repository_id, name, carried))
    except CairnError as exc:
        logs.event("cloud.batch_not_written", batch=name, where=cloud.where, error=str(exc))
        return None
    return name


def opened(copy: bytes | None, open_: Callable[[bytes], Opened]) -> Opened | None:
    """What a batch's ``copy`` of an object opens to, opened as one read of the object
    would be; None when there is no copy or it fails: the object itself then decides, read
    from the bucket (a batch is only ever a copy)."""
    if copy is None:
        return None
    try:
        return open_(copy)
    except Corruption:
        return None
