"""Chunks of a cloud repository stored in packs: few large objects, read by ranges.

One object per 64 KiB chunk costs a request per chunk each way and an object per chunk
kept (the bucket's per-request price and rate limits, listings of millions of names).
Here chunks are appended to a *pack* in memory and a full pack (``PACK_BYTES``, 32 MiB) is
uploaded in one PUT (or in parts, `S3Backend.put`: whole or not at all), then its *index*::

    packs/<id[-2:]>/<id>   the stored chunks (`ChunkStore.encode`'s bytes) end to end: each
                           is decoded and checked on its own, so nothing in a pack is trusted
    index/<id>             zstd of the sealed JSON {repository, pack, size, chunks: [[digest
                           hex, offset, length], ...], replaces: [digest hex, ...], plain:
                           [size before compression, ...]}

``<id>`` is a `cloud_feed.new_key` taken when the pack is sealed: a node lists only the
indexes newer than its cursor (`refresh`), so learning what others stored costs requests for
the new only. The 2-hex prefix of a pack spreads requests over the bucket's prefixes (AWS
S3: 3,500 PUT and 5,500 GET per second each). An index is PUT only after its pack's PUT
succeeded, so an index names only a complete pack; `sync` waits for every pack and index
of the puts before it: a point is published after its `sync`, so every chunk a published
point needs is in a pack whose index is in the bucket.

A local SQLite file in the cache folder (``pack-index.db``, rebuilt from the bucket if
lost) maps each digest to its copies (pack, offset, length) and keeps, per pack, its size
and the server's stamp of its index. A digest may be in several packs (two writers, a
repack); the copy read is the one a ``replace`` put stored (a repair), else the oldest
pack's: `locations` says which, and the prune keeps that copy.

Reads go through the index: `get_many` groups names by pack, sorts them by offset and
reads neighbours (gaps up to ``READ_GAP``, up to ``READ_LIMIT`` bytes) with one ranged GET,
many in flight. A name no index knows is looked for once more after a `refresh`, then as
a legacy one-object chunk (``chunks/abc/<hash>``, repositories made before packs).
Deleting a chunk does nothing to the bucket: space is freed by the prune, whole packs at a
time (`cairn.store.cloud_prune`), after the two-step deletion of ``CLOUD.md``.

Every node reads every new index once (a writer dedups against what others stored). A
sync that writes a batch of records (`cloud_batch`) puts in it the indexes of the last hour
it holds (their sealed JSON, kept in ``index_text``: `index_texts`); a node that reads the
batch `offer`s them here, and `refresh` takes an offered index in place of its GET, for a
name its own listing shows (a batch never makes a pack known), opened and checked as one
read from the bucket (one that fails is read from the bucket). A refresh that lists
`cloud_batch.BATCH_MIN` or more new indexes no batch offered (a writer's plan meeting the
packs of points others have not published yet, which no record brings) asks the batches
its node's last sync listed for them (`carrier`: one GET per batch that may carry them).

``plain`` (since 2026-12-01; older indexes lack it) runs parallel to ``chunks``: each
chunk's size before compression, 0 where the writer did not know it (a repair's put), so
that `stats` is right on a node that learnt the chunks from the bucket (`plain_sizes`). A
new key rather than a fourth element per chunk: readers before it refuse a chunk entry of
another shape as damage, and ignore keys they do not know, and appliances of several
versions share a bucket. An index whose ``plain`` is not a list of that length of ints
from 0 to the repository's largest chunk (``largest``) is refused like any other damage,
not read with its sizes dropped: it is sealed, so only a holder of the key wrote it, and a
writer that broke this part of the contract is not trusted with the ranges beside it; one
rule for every field keeps the check and its error the same. A size within the bounds
cannot be checked without reading the chunk: it feeds statistics only, never a read.

Nothing from the bucket is trusted: an index must open with the repository's key
(`records`) and name this repository, its own pack, and ranges inside the pack's size; a
range read must be whole and every chunk in it is checked by its hash (`chunks`); the
errors name the pack and index objects, and nothing local is changed by a bad one.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from cairn.errors import Corruption, MissingChunk
from cairn.store import cloud_feed
from cairn.store.backend import T
from cairn.store.backends.packs import batches
from cairn.store.chunks import DEFAULT_MAX_SIZE, chunk_name
from cairn.store.sqlite import SharedDb

if TYPE_CHECKING:
    from cairn.store.cloudlock import Bucket
    from cairn.store.records import Sealer

PACK_BYTES = 32 * 1024 * 1024
MAX_CHUNKS = 16384
"""chunks per pack at most (tiny compressed chunks): keeps an index under INDEX_LIMIT"""
IN_FLIGHT = 4
"""packs uploading at once: enough to keep the link busy, bounded in memory (IN_FLIGHT + 1
packs). 4 (rclone's --transfers) sent the 729 MB of the 2 GiB bench point in 17.3-24.6 s
(median 22.0) against 19.0-25.9 s (25.1) with 3, alternating four times at load 8-10"""
SLACK = 1 << 20
"""room in a pack's buffer past the target size, for the chunk that fills it"""
READ_GAP = 256 * 1024
READ_LIMIT = 16 * 1024 * 1024
"""bytes one ranged GET reads at most. SeaweedFS's CPU per byte falls with the size of a
read: restoring a 2 GiB point (735 MB stored) cost it 1.9-2.15 s in 8 MiB reads against
1.8-1.95 s in 16 MiB ones (medians of 4-5 alternating, load 8-9; raw GETs of the same
ranges: 1.03-1.13 s against 0.91-0.97), and 2.0-2.3 s in 4 MiB ones; cairn's own CPU was
the same. Whole 32 MiB packs cost cairn 1 s more (4.7-5.3 s against 3.6-3.9 s, measured
before: big buffers)"""
READERS = 8
"""ranged GETs in flight: on 2 cores 8 restored a 512 MiB point faster than 16 or 32 (3.1 s
against 3.6 and 3.3, alternating in one run at load 11-13): decoding shares the GIL"""
INDEX_LIMIT = 8 * 1024 * 1024
REFRESH_EVERY = 1.0
"""seconds between refreshes a miss may trigger (a legacy repository misses every read)"""
_MAX_PACK = 1 << 40
_CHUNK = re.compile(r"^chunks/[0-9a-f]{3}/([0-9a-f]{64})$")
_HEX = re.compile(r"^[0-9a-f]{64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS packs(
    id TEXT PRIMARY KEY, size INTEGER NOT NULL, stamp REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS chunks(
    digest BLOB NOT NULL, pack TEXT NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL, rank INTEGER NOT NULL, PRIMARY KEY(digest, pack)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_pack ON chunks(pack);
CREATE TABLE IF NOT EXISTS forgotten(id TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursor(one INTEGER PRIMARY KEY CHECK(one = 1), at REAL);
CREATE TABLE IF NOT EXISTS index_text(id TEXT PRIMARY KEY, text BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS plain(digest BLOB PRIMARY KEY, size INTEGER NOT NULL) WITHOUT ROWID;
"""
"""``plain``: a chunk's size before compression, by digest (a fact of its content, whatever
pack holds it), from the indexes that carry it; a digest not in it is of unknown size. A
side table, so an existing file gains it as it opens, empty: its packs read before are
unknown, as their indexes (older than ``plain``) mostly are."""
TEXT_KEEP = 2 * 3600.0
"""seconds an index's text is kept for batches (`index_texts`): twice what one carries"""

DATA_PREFIXES = ("packs", "index", "chunks")
"""where chunk bytes are kept (``chunks``: legacy one-object chunks)"""

Location = tuple[str, int, int]
"""pack id, offset, length"""


class PackBucket(Protocol):
    """What the packs need of the bucket beyond `cloudlock.Bucket`: bounded and ranged GETs."""

    def get(self, name: str, limit: int | None = None) -> bytes: ...

    def get_range(self, name: str, start: int, end: int) -> bytes | memoryview: ...


def pack_bytes() -> int:
    """The size a pack is sealed at (``CAIRN_CLOUD_PACK_BYTES``: tests make small packs)."""
    return int(os.environ.get("CAIRN_CLOUD_PACK_BYTES") or PACK_BYTES)


def pack_object(pack: str) -> str:
    return f"packs/{pack[-2:]}/{pack}"


def index_object(pack: str) -> str:
    return f"index/{pack}"


def chunk_digest(name: str) -> bytes | None:
    """The digest a chunk object name carries; None for any other name."""
    match = _CHUNK.match(name)
    return bytes.fromhex(match.group(1)) if match else None


@dataclass(frozen=True)
class _Index:
    """A pack's index as read (or written) here, with its sealed JSON (``text``)."""

    pack: str
    size: int
    stamp: float
    rows: list[tuple[bytes, int, int, bool]]
    text: bytes
    plain: dict[bytes, int] = field(default_factory=dict)
    """the known sizes before compression (none for an index older than ``plain``)"""


class _PackGone(Exception):
    """A pack a prune deleted (another copy of its chunks is read instead)."""


@dataclass(frozen=True)
class PackInfo:
    """A pack as its index describes it; ``stamp`` is the server's time of the index."""

    id: str
    size: int
    stamp: float
    chunks: list[tuple[bytes, int, int]]


@dataclass(eq=False)
class _Pack:
    """A pack being filled in memory (then uploaded: its bytes stay readable until then):
    the first ``size`` bytes of ``buf``, a buffer the packs of one `CloudPacks` reuse."""

    buf: bytearray = field(default_factory=bytearray)
    size: int = 0
    chunks: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    replaces: set[bytes] = field(default_factory=set)
    plain: dict[bytes, int] = field(default_factory=dict)
    id: str = ""

    def add(self, digest: bytes, data: bytes, plain: int = 0) -> None:
        end = self.size + len(data)
        if end > len(self.buf):  # a new buffer: an old upload may still hold this one
            grown = bytearray(max(end, 2 * len(self.buf)))
            grown[: self.size] = memoryview(self.buf)[: self.size]
            self.buf = grown
        self.buf[self.size : end] = data
        self.chunks[digest] = (self.size, len(data))
        if plain:
            self.plain[digest] = plain
        self.size = end

    def view(self) -> memoryview:
        """The pack's bytes, uncopied: obstore sends them as they are."""
        return memoryview(self.buf)[: self.size]


def inflate(raw: bytes, what: str, limit: int = INDEX_LIMIT) -> bytes:
    import zstandard

    try:
        if zstandard.frame_content_size(raw) > limit:
            raise Corruption(f"{what} claims to inflate past {limit} bytes: it was not "
                             "written by cairn; remove it")
        return zstandard.ZstdDecompressor().decompress(raw, max_output_size=limit)
    except zstandard.ZstdError:
        raise Corruption(f"{what} is not a zstd frame: it was altered; remove it and its "
                         "pack, or restore them from a copy") from None


class CloudPacks:
    """The `Backend` of a cloud repository's ``chunks/`` names; safe to share between
    threads. ``store`` uploads one object (the cloud sets it to put under Object Lock
    when publishing immutably)."""

    def __init__(self, bucket: Bucket, folder: Path, sealer: Sealer, repository: str,
                 where: str) -> None:
        self.bucket = bucket
        self.sealer = sealer
        self.repository = repository
        self.where = where
        self.store: Callable[[str, bytes | memoryview], None] = bucket.put
        self.hidden: Callable[[], list[str]] = list
        """index objects hidden behind a delete marker while locked (Object Lock): a node
        learning every index (no cursor yet) reads them too, past their marker"""
        self.clock = cloud_feed.Clock()
        self.target = pack_bytes()
        self.largest = DEFAULT_MAX_SIZE
        """the repository's largest plain chunk: a bigger size in an index is damage"""
        self._db = SharedDb(folder / "pack-index.db", _SCHEMA, prefetch=True)
        """read ahead as it opens: a restore's first look-up of its chunks, cold, read its
        pages one at a time (0.22-0.27 s for a 2 GiB point, 0.05-0.15 s read ahead)"""
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._open: _Pack | None = None
        self._pending: dict[bytes, _Pack] = {}
        self._uploads: list[Future[None]] = []
        self._slots = threading.BoundedSemaphore(IN_FLIGHT + 1)
        """one per pack in memory (the open one and those uploading): bounds memory"""
        self._buffers: list[bytearray] = []
        """buffers of uploaded packs, for the next ones: a fresh bytearray per pack, grown
        by appends and copied to bytes for the PUT, cost 2 s of CPU per GB sent (page
        faults and copies), a quarter of the appliance's CPU in a first replication"""
        self._pool: ThreadPoolExecutor | None = None
        self._refreshed = -REFRESH_EVERY
        self._offered: dict[str, bytes] = {}
        """index texts a batch carried, by object name (`offer`)"""
        self.carrier: Callable[[list[str]], dict[str, bytes]] = lambda names: {}
        """index texts (by object name) that batches carry of the index objects named, new
        to a refresh and not offered (`Cloud.carried_indexes`)"""

    def _ranged(self) -> PackBucket:
        return self.bucket  # type: ignore[return-value]  # S3Backend, or the tests' layer

    # -- writing -------------------------------------------------------------------------

    def put(self, name: str, data: bytes, replace: bool = False, plain: int = 0) -> None:
        """Append to the open pack; a full one is uploaded in the background (this call
        waits while IN_FLIGHT others are). ``replace``: the copy read from now on is this
        one (a repair of a damaged copy). ``plain``: the chunk's size before compression,
        for the index (0: unknown)."""
        digest = chunk_digest(name)
        if digest is None:
            raise ValueError(f"{name!r} is not a chunk name")
        slot, full = False, None
        while True:
            with self._lock:
                if digest in self._pending and not replace:
                    break
                if self._open is None and slot:
                    self._open, slot = _Pack(self._buffer()), False
                if self._open is not None:
                    full = self._append(digest, data, replace, plain)
                    break
            # No pack open: wait, outside the lock (an ending upload takes it), until fewer
            # than IN_FLIGHT + 1 packs are in memory.
            self._slots.acquire()
            slot = True
        if slot:  # another putter opened a pack meanwhile
            self._slots.release()
        if full is not None:
            self._ship(full)

    def _append(self, digest: bytes, data: bytes, replace: bool, plain: int) -> _Pack | None:
        """Add to the open pack (lock held); returns it once full, closed to more puts."""
        pack = self._open
        assert pack is not None
        pack.add(digest, data, plain)
        if replace:
            pack.replaces.add(digest)
        self._pending[digest] = pack
        if pack.size < self.target and len(pack.chunks) < MAX_CHUNKS:
            return None
        self._open = None
        return pack

    def _buffer(self) -> bytearray:
        """A buffer for a new pack (lock held): an uploaded pack's, else a new one."""
        return self._buffers.pop() if self._buffers else bytearray(self.target + SLACK)

    def _ship(self, pack: _Pack) -> None:
        """Upload a full (or synced) pack in the background; it holds its slot (taken when
        it was opened) until its upload ends."""
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="cairn-pack")
            future = self._pool.submit(self._upload, pack)
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._uploads.append(future)

    def _upload(self, pack: _Pack) -> None:
        try:
            self._send(pack)
        finally:
            with self._lock:
                for digest in pack.chunks:
                    if self._pending.get(digest) is pack:
                        del self._pending[digest]
                if len(self._buffers) <= IN_FLIGHT:
                    self._buffers.append(pack.buf)
            self._slots.release()

    def _send(self, pack: _Pack) -> None:
        """Upload a sealed pack, then its index, then record it here. Its id is taken now,
        not when it was opened: an index must land within `cloud_feed.WINDOW` of its key's
        time, and a pack may stay open for as long as a backup lasts."""
        pack.id = cloud_feed.new_key(self.clock.now())
        self.store(pack_object(pack.id), pack.view())
        import zstandard

        record = self.sealer.seal({
            "repository": self.repository, "pack": pack.id, "size": pack.size,
            "chunks": [[d.hex(), o, n] for d, (o, n) in pack.chunks.items()],
            "replaces": sorted(d.hex() for d in pack.replaces),
            "plain": [pack.plain.get(d, 0) for d in pack.chunks]})
        name = index_object(pack.id)
        text = json.dumps(record, separators=(",", ":")).encode()
        self.store(name, zstandard.ZstdCompressor(level=3).compress(text))
        stamp = self.bucket.stamp(name)
        self.clock.learn(stamp)
        self._record(_Index(pack.id, pack.size, stamp, [
            (d, o, n, d in pack.replaces) for d, (o, n) in pack.chunks.items()], text,
            pack.plain))

    def _record(self, index: _Index) -> None:
        keep = cloud_feed.new_key(time.time() - TEXT_KEEP)[:14]
        with self._db.tx() as db:
            db.execute("INSERT OR IGNORE INTO packs VALUES(?, ?, ?)",
                       (index.pack, index.size, index.stamp))
            db.executemany("INSERT OR REPLACE INTO chunks VALUES(?, ?, ?, ?, ?)",
                           ((d, index.pack, o, n, int(r)) for d, o, n, r in index.rows))
            db.execute("INSERT OR IGNORE INTO index_text VALUES(?, ?)", (index.pack, index.text))
            db.executemany("INSERT OR IGNORE INTO plain VALUES(?, ?)", index.plain.items())
            db.execute("DELETE FROM index_text WHERE id < ?", (keep,))

    def index_texts(self, since: float, most: int) -> dict[str, bytes]:
        """The sealed JSON of the indexes this node read or wrote whose key is ``since``
        or later (the newest ``most``), by object name: for a batch (`cloud_batch`)."""
        rows = self._db.query("SELECT id, text FROM index_text WHERE id >= ? ORDER BY id "
                              "DESC LIMIT ?", (cloud_feed.new_key(since)[:14], most))
        return {index_object(i): bytes(t) for i, t in rows}

    def offer(self, texts: dict[str, bytes]) -> None:
        """Index texts a batch carried (by object name): the next `refresh` opens one in
        place of its GET when its listing shows that index."""
        self._offered.update((n, t) for n, t in texts.items() if n.startswith("index/"))

    def sync(self) -> None:
        """Upload the open pack and wait for every upload: when this returns, each chunk
        put before is in a pack whose index is in the bucket. The first failed upload is
        raised (its chunks are not stored: the caller must not publish)."""
        with self._lock:
            pack, self._open = self._open, None
        if pack is not None:
            self._ship(pack)
        with self._lock:
            uploads, self._uploads = self._uploads, []
        failed: BaseException | None = None
        for future in uploads:
            exc = future.exception()
            failed = failed or exc
        if failed is not None:
            raise failed

    def write_pack(self, items: Iterable[tuple[bytes, bytes]],
                   plain: dict[bytes, int] | None = None) -> str:
        """Upload one pack of ``(digest, stored bytes)`` and its index now (the prune's
        repack); returns its id. Its chunks keep their digests: nothing that names them
        changes. ``plain``: their sizes before compression, where known."""
        pack = _Pack()
        for digest, stored in items:
            pack.add(digest, stored, (plain or {}).get(digest, 0))
        self._send(pack)
        return pack.id

    # -- the index -----------------------------------------------------------------------

    def refresh(self, full: bool = False) -> int:
        """Learn the indexes other writers put since the last refresh (`cloud_feed.since`:
        one LIST when nothing is new); returns how many packs were new here. ``full``
        lists every index (the prune's: an index that landed behind the window counts)."""
        with self._refresh_lock:
            rows = self._db.query("SELECT at FROM cursor")
            cursor = rows[0][0] if rows and not full else None
            listed = dict(cloud_feed.since(self.bucket, "index", cursor))
            if cursor is None:
                listed.update((n, cloud_feed.key_time(self._index_id(n)))
                              for n in self.hidden() if n not in listed)
            ids = {name: self._index_id(name) for name in listed}
            known = self._known(list(ids.values()))
            new = [(ids[name], stamp) for name, stamp in listed.items()
                   if ids[name] not in known]
            self.offer(self.carrier([n for n, i in ids.items()
                                     if i not in known and n not in self._offered]))
            if new:
                from cairn.store.parallel import bounded_map

                for found in bounded_map(self._read_index, new, READERS):
                    if found is not None:
                        self._record(found)
            self._offered.clear()
            at = cloud_feed.newest(list(listed), cursor)
            if at is not None:
                with self._db.tx() as db:
                    db.execute("INSERT OR REPLACE INTO cursor VALUES(1, ?)", (at,))
            self._refreshed = time.monotonic()
            return len(new)

    def _index_id(self, name: str) -> str:
        key = name.rpartition("/")[2]
        if name != index_object(key) or not cloud_feed.KEY.match(key):
            raise Corruption(f"object {name!r} in {self.where} is not a pack index cairn "
                             "writes: someone else wrote to the bucket; remove it")
        return key

    def _known(self, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            for table in ("packs", "forgotten"):
                found.update(r[0] for r in self._db.query(
                    f"SELECT id FROM {table} WHERE id IN ({marks})", tuple(part)))
        return found

    def _read_index(self, item: tuple[str, float]) -> _Index | None:
        """One index, opened and checked: the text a batch offered, else (or if that one
        fails) from the bucket; None when it went since the listing (a prune deleted its
        pack)."""
        pack, stamp = item
        name = index_object(pack)
        what = f"index {name} of pack {pack_object(pack)} in {self.where}"
        offered = self._offered.get(name)
        if offered is not None:
            try:
                return self._open_index(pack, stamp, offered, what)
            except Corruption:
                pass  # the batch's copy: the index itself decides
        try:
            raw = self._ranged().get(name, INDEX_LIMIT)
        except KeyError:
            return None
        return self._open_index(pack, stamp, inflate(raw, what), what)

    def learn(self, pack: str, raw: bytes) -> None:
        """Record the index of ``pack`` as stored (``raw``), read by the caller past a delete
        marker (`cloud_pack_locks.read_hidden`); `Corruption` when it does not open with the
        repository's key or names another pack or repository, and then nothing is recorded."""
        what = f"index {index_object(pack)} of pack {pack_object(pack)} in {self.where}"
        text = inflate(raw, what)
        self._record(self._open_index(pack, cloud_feed.key_time(pack), text, what))

    def _open_index(self, pack: str, stamp: float, text: bytes, what: str) -> _Index:
        record = self.sealer.open(text, what)
        rows = self._parse(record, pack, what)
        return _Index(pack, int(record["size"]), stamp, rows, text,
                      self._plain(record, rows, what))

    def _plain(self, record: dict[str, Any], rows: list[tuple[bytes, int, int, bool]],
               what: str) -> dict[bytes, int]:
        """The known sizes before compression an index gives (none when it is older than
        ``plain``); a list that is not one int from 0 to ``largest`` per chunk is damage."""
        sizes = record.get("plain")
        if sizes is None:
            return {}
        if not (isinstance(sizes, list) and len(sizes) == len(rows)
                and all(type(n) is int and 0 <= n <= self.largest for n in sizes)):
            raise Corruption(f"{what} gives sizes before compression that no chunk of this "
                             "repository has: it was altered; remove it and its pack, or "
                             "restore them from a copy")
        return {d: n for (d, _o, _n, _r), n in zip(rows, sizes, strict=True) if n}

    def _parse(self, record: dict[str, Any], pack: str,
               what: str) -> list[tuple[bytes, int, int, bool]]:
        """The rows an opened index gives, once it names this repository and its own pack,
        and every range lies inside the pack."""
        try:
            size = record["size"]
            replaces = {bytes.fromhex(h) for h in record["replaces"] if _HEX.match(h)}
            rows = [(bytes.fromhex(h), o, n, False) for h, o, n in record["chunks"]
                    if _HEX.match(h)]
            valid = (record["repository"] == self.repository and record["pack"] == pack
                     and isinstance(size, int) and 0 < size <= _MAX_PACK
                     and len(rows) == len(record["chunks"])
                     and all(isinstance(o, int) and isinstance(n, int) and o >= 0 and n > 0
                             and o + n <= size for _d, o, n, _r in rows))
        except (KeyError, TypeError, ValueError, AttributeError):
            valid = False
        if not valid:
            raise Corruption(f"{what} names another pack or repository, or ranges outside "
                             "its pack: it was moved or altered; remove it and its pack, or "
                             "restore them from a copy")
        return [(d, o, n, d in replaces) for d, o, n, _r in rows]

    def locations(self, digests: Iterable[bytes]) -> dict[bytes, Location]:
        """The copy read of each digest the index knows: the one a repair stored, else
        the oldest pack's (the prune keeps that copy)."""
        wanted = list(dict.fromkeys(digests))
        best: dict[bytes, tuple[int, str, int, int]] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            for digest, pack, offset, length, rank in self._db.query(
                    "SELECT digest, pack, offset, length, rank FROM chunks WHERE digest IN "
                    f"({','.join('?' * len(part))})", tuple(part)):
                if digest not in best or (-rank, pack) < (-best[digest][0], best[digest][1]):
                    best[digest] = (rank, pack, offset, length)
        return {d: (p, o, n) for d, (_r, p, o, n) in best.items()}

    def plain_sizes(self, digests: Iterable[bytes]) -> dict[bytes, int]:
        """The size before compression of each of ``digests`` an index gave (`stats` on a
        node that did not send them)."""
        wanted = list(dict.fromkeys(digests))
        found: dict[bytes, int] = {}
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            found.update(self._db.query(
                f"SELECT digest, size FROM plain WHERE digest IN ({','.join('?' * len(part))})",
                tuple(part)))
        return found

    def pack_ids(self) -> list[str]:
        """Every pack the index knows, oldest first."""
        return [r[0] for r in self._db.query("SELECT id FROM packs ORDER BY id")]

    def pack_info(self, pack: str) -> PackInfo | None:
        rows = self._db.query("SELECT size, stamp FROM packs WHERE id = ?", (pack,))
        if not rows:
            return None
        chunks = self._db.query("SELECT digest, offset, length FROM chunks WHERE pack = ? "
                                "ORDER BY offset", (pack,))
        return PackInfo(pack, rows[0][0], rows[0][1], [(d, o, n) for d, o, n in chunks])

    def stored_bytes(self) -> int:
        """What the packs the index knows take in the bucket (dead bytes too): a cloud
        repository's size without reading any point's block map (`cloud_counts`)."""
        return int(self._db.query("SELECT COALESCE(SUM(size), 0) FROM packs")[0][0])

    def forget_pack(self, pack: str) -> None:
        """Drop a pack from the index (the prune deleted it, or is about to); a later
        refresh does not learn it again."""
        with self._db.tx() as db:
            db.execute("DELETE FROM chunks WHERE pack = ?", (pack,))
            db.execute("DELETE FROM packs WHERE id = ?", (pack,))
            db.execute("INSERT OR IGNORE INTO forgotten VALUES(?)", (pack,))

    def objects(self, names: list[str]) -> list[str]:
        """The bucket objects holding ``names``: a packed chunk's pack and its index, a
        legacy chunk's own object, any other name itself (what Object Lock must lock)."""
        digests = {n: chunk_digest(n) for n in names}
        found = self.locations(d for d in digests.values() if d is not None)
        out: list[str] = []
        for name, digest in digests.items():
            loc = found.get(digest) if digest is not None else None
            out += [pack_object(loc[0]), index_object(loc[0])] if loc else [name]
        return list(dict.fromkeys(out))

    def describe(self, digest: bytes) -> str:
        """Where a chunk read was stored, for an error about it ("" when not in a pack)."""
        loc = self.locations([digest]).get(digest)
        if loc is None:
            return ""
        pack, offset, length = loc
        return (f"read from pack {pack_object(pack)} bytes {offset}-{offset + length - 1} "
                f"(index {index_object(pack)}) in {self.where}")

    # -- reading -------------------------------------------------------------------------

    def _memory(self, digest: bytes) -> bytes | None:
        """A chunk put here and not yet uploaded."""
        with self._lock:
            pack = self._pending.get(digest)
            if pack is None:
                return None
            offset, length = pack.chunks[digest]
            return bytes(pack.buf[offset : offset + length])

    def _locate(self, digests: list[bytes]) -> dict[bytes, Location]:
        """`locations`, refreshing once (at most every REFRESH_EVERY) when some are
        unknown: another writer may have stored them since."""
        found = self.locations(digests)
        if len(found) < len(set(digests)) \
                and time.monotonic() - self._refreshed >= REFRESH_EVERY and self.refresh():
            found = self.locations(digests)
        return found

    def get(self, name: str) -> bytes:
        digest = chunk_digest(name)
        if digest is None:
            return self.bucket.get(name)
        data = self._memory(digest)
        if data is not None:
            return data
        for _attempt in range(3):
            loc = self._locate([digest]).get(digest)
            if loc is None:
                try:
                    return self.bucket.get(name)  # a legacy chunk object, or KeyError
                except KeyError:
                    if not self.refresh():  # `cloud convert` packed it meanwhile?
                        raise
                    continue
            pack, offset, length = loc
            try:
                return bytes(self._read(pack, offset, offset + length, digest))
            except _PackGone:
                self.forget_pack(pack)  # a prune deleted it: read another copy
        raise MissingChunk(f"chunk {digest.hex()} is in no pack of {self.where} left")

    def _gone(self, pack: str) -> bool:
        """Whether a missing pack was deleted by a prune (which condemned it first, and
        deletes its index after it) rather than lost."""
        from cairn.store.cloud_prune import CONDEMNED

        return (self.bucket.exists(f"{CONDEMNED}/{pack}")
                or not self.bucket.exists(index_object(pack)))

    def _read(self, pack: str, start: int, end: int, digest: bytes) -> bytes | memoryview:
        """Bytes ``[start, end)`` of a pack, whole, or an error naming it and its index."""
        name = pack_object(pack)
        try:
            data = self._ranged().get_range(name, start, end)
        except KeyError:
            if self._gone(pack):
                raise _PackGone(pack) from None
            exc = MissingChunk(f"pack {name} is missing from {self.where} though its index "
                               f"{index_object(pack)} is there: restore it from a copy, or "
                               "heal with `cairn verify --repair-from` a local repository")
            exc.digest = digest
            raise exc from None
        if len(data) != end - start:
            exc = Corruption(f"pack {name} in {self.where} ends before byte {end} that its "
                             f"index {index_object(pack)} names: it was truncated; restore it "
                             "from a copy, or heal with `cairn verify --repair-from`")
            exc.digest = digest
            raise exc
        return data

    def get_many(self, names: list[str], each: Callable[[str, bytes], T]) -> Iterator[T]:
        """Packed names in ranged reads of neighbours (`packs.batches`), many in flight; names
        not yet uploaded from memory; legacy chunk objects one GET each."""
        digests = {n: chunk_digest(n) for n in names}
        rest: dict[str, bytes] = {}
        legacy: list[str] = []
        for name, digest in digests.items():
            data = self._memory(digest) if digest is not None else None
            if data is not None:
                yield each(name, data)
            elif digest is None:
                legacy.append(name)
            else:
                rest[name] = digest
        located = self._locate(list(rest.values()))
        found = {n: located[d] for n, d in rest.items() if d in located}
        legacy += [n for n, d in rest.items() if d not in located]

        def read(batch: list[tuple[str, Location]]) -> list[T]:
            pack, start = batch[0][1][0], batch[0][1][1]
            end = max(o + n for _name, (_p, o, n) in batch)
            try:
                data = memoryview(self._read(pack, start, end, digests[batch[0][0]] or b""))
            except _PackGone:
                self.forget_pack(pack)  # a prune deleted it: each from another copy
                return [each(name, self.get(name)) for name, _loc in batch]
            return [each(name, data[o - start : o - start + n]) for name, (_p, o, n) in batch]

        reads = list(batches(found, READ_GAP, READ_LIMIT))
        if len(reads) == 1:
            yield from read(reads[0])
        elif reads:
            from cairn.store.parallel import bounded_map

            for results in bounded_map(read, reads, READERS):
                yield from results
        if legacy:
            from cairn.store.parallel import get_each

            yield from get_each(self.get, legacy, each, READERS)

    def exists(self, name: str) -> bool:
        digest = chunk_digest(name)
        if digest is not None and (self._memory(digest) is not None or self._locate([digest])):
            return True
        return self.bucket.exists(name)

    def delete(self, name: str) -> None:
        """Nothing: a chunk's bytes go with its whole pack, when the prune finds no point
        needs any of it (or moves what is still needed elsewhere first)."""

    def delete_many(self, names: list[str]) -> None:
        """Nothing, as `delete`."""

    def list(self, prefix: str) -> Iterator[str]:
        """The chunk names the index, the open packs and legacy objects hold (``chunks``);
        any other prefix as the bucket lists it."""
        if prefix.strip("/") != "chunks":
            yield from self.bucket.list(prefix)
            return
        with self._lock:
            names = {d for d in self._pending}
        names.update(r[0] for r in self._db.query("SELECT DISTINCT digest FROM chunks"))
        yield from sorted(chunk_name(d) for d in names)
        yield from self.bucket.list("chunks")

    def close(self) -> None:
        """Wait for the uploads under way (their failures were `sync`'s to report: a
        closing run that did not sync publishes nothing) and release the index."""
        with self._lock:
            uploads, self._uploads, dropped, self._open = self._uploads, [], self._open, None
        if dropped is not None:
            self._slots.release()
        for future in uploads:
            future.exception()
        if self._pool is not None:
            self._pool.shutdown()
        self._db.close()

    def recover(self) -> None:
        """Nothing: a dead writer's pack without an index is the prune's to remove."""
