"""Cloud repositories: a bucket holds the truth, the local catalog is only a cache of it.

Layout in the bucket (under its prefix)::

    config.json                      the repository config (a key *id*, never a key), sealed
    (with --immutable, records, chunks and config.json are under S3 Object Lock: `immutable`)
    points/<volume>/<point id>.json  one immutable sealed object per point: it exists =
                                     committed
    marks/<point id>.json            a point's lock, deletion hold and flags, sealed, with a
                                     sequence number against replays (`cloud_marks`)
    machines/<machine>/<id>.json     a machine point: its disks' points, sealed (`cloud_machines`)
    chunks/abc/<hash>                chunks, as in a local repository
    locks/<random>.json              a prune's lock against another prune (`cloudlock`), only
    feed/<key>.<op>~<object name>    "this object was put/removed", for incremental syncs
                                     (`cloud_sync`)
    feed/<key>.batch~<first key>     a copy of many recent point, marks and machine point
                                     records, read by a sync in one GET instead of one
                                     each (`cloud_batch`)
    removed/<volume>/<point id>_<created µs>_<mac>  a point that was here and was deleted

``points/`` and ``removed/`` together record every point ever sent: replication never sends
a point again that the cloud's retention (or anyone) removed, whichever appliance or cache
replicates. A tombstone is written before its point object goes, so a crash between the two
leaves both (the point is still there; nothing is sent twice). Its name carries everything
(one listing reads them all) including a MAC, so a forged tombstone is ignored (the point is
then sent again, the safe side).

Nothing on local disk is needed to use the bucket: the cache folder
(``$CAIRN_CACHE`` or ``~/.cache/cairn``, one folder per repository id) holds a catalog that
`Cloud.sync` rebuilds from the ``points/`` objects, plus this node's clones. Any node can
be lost and another rebuilds. A sync reads only what the feed announces since the last one
(one request when nothing is new), and every prefix in full at a cache's first sync and then
once a day (`cloud_sync`). It reads the point records it learns (most in a batch another
sync wrote, `cloud_batch`), never their block maps: a
cache counts runs (`runs`) only for the volumes it writes, and reads another appliance's
block map when something walks it (a restore, a verify, the prune: `cloud_counts`).

No lock on the write path. Any number of nodes replicate, delete and apply retention in
one repository at once; none takes a lock (only two prunes exclude each other, `cloudlock`).
Why that is safe, with G the grace period (`cloudlock.lifetime`, 30 minutes):

1. A point is published only once complete. Its record is created (``If-None-Match``)
   only after every chunk it reads is in the bucket: uploaded by this run (every upload
   acknowledged, packs flushed with their indexes, `cloud_packs`), held by a point the
   cache, synced just before the plan, counts (its predecessor, the volumes it writes), or
   in a pack whose index the node read (a pack is put before its index) and that a HEAD
   made after the notices were listed still finds (the index a node keeps outlives a pack
   another node's prune deleted: `cloud_prune.still_there`), less what is condemned
   (rule 3). None of these needs another node's block map: the cache's counts
   of the volumes it does not write were never what kept a chunk in the bucket. A machine
   point's record follows the records of all its disks' points. A reader never meets a
   record whose data is not there, and a record, once there, never changes.
2. Nothing a published or in-flight point needs is deleted by a writer: unpublishing (a
   delete, retention) writes the tombstone, deletes the record and marks, then announces
   it; its chunks stay (`Repository.reclaim` unlinks nothing in a bucket), because another
   node may be about to publish a point that reuses them. Only a prune frees space
   (`cloud_prune`), by two steps: it lists every point in full (never the feed), condemns
   only packs older than G, by the server's LastModified, that no listed point needs, and
   deletes one only once its notice is older than G and a fresh full listing still shows no
   point needing it (else the condemnation is lifted).
3. Grace for young objects and slow writers. What a writer uploaded but has not yet
   published is younger than G, so never condemned. A writer plans a point from a sync at
   t_c and publishes it only before t_c + G/2 on its monotonic clock, else it syncs and
   plans again (`replicate`); it takes a chunk whose only copies are condemned as absent. A
   pack it relied on was not condemned at t_c; condemned later, at t_x > t_c, it is deleted
   at t_d >= t_x + G > t_p, after a full listing that already shows the writer's point,
   which needs it: the condemnation is lifted instead.
4. Writers racing on one chunk write the same bytes under the same digest; records and
   tombstones have names of their own (a point id is random), so writers never overwrite
   each other's objects, and marks carry a sequence number (`cloud_marks`).
5. The incremental sync misses nothing it must not: a feed entry is written after the
   object it announces and lands within `cloud_feed.WINDOW` of its key, so a windowed
   listing (after the cursor less the window, once every `cloud_sync.rescan_every`; the
   syncs between list only after the newest entry taken) sees it, and sees the object
   too (read-after-write); a removal is taken only once a HEAD says the record is gone.
   A batch only saves the GETs of records whose entries the listing shows (point records,
   marks, machine points): each record in it is authenticated as one read from its own
   name, and one that fails (or a batch that fails) is read itself; a record whose point's
   tombstone the cache knows, or whose removal the listing announces, is always read.
   What has no entry (a writer that died between its object and its entry, an older
   cairn, a name planted or altered behind cairn's back) waits for the next full sync:
   a stale cache at worst sends a point that is there already (its record is found
   identical) or lists a point deleted elsewhere a while longer (its data
   outlives it by at least G). Deciding what is dead never relies on the feed: the prune
   lists in full.

A listing is never trusted to say an object is gone: a point the cache knows leaves it only
once a HEAD confirms its object is gone. Point records are created with ``If-None-Match``
where the server supports it. Commands that only read write nothing to the bucket: an
object hidden by a DELETE while under Object Lock is read past its delete marker, and only
writers put it back (`revive`).

Whoever can write to the bucket is not trusted (`records`, `keys`): ``config.json`` and
every point record carry a MAC made with a key that never leaves the appliance (the
encryption key, or the integrity key `cairn init` made), and one that fails is refused,
not skipped. A point record names its repository, volume and id, which must match its
object name and the config, so records cannot be moved between repositories or volumes.
Names and ids from the bucket are checked against their patterns before any use and never
become paths; chunks are content-addressed and checked by `chunks`.

How this maps elsewhere: AWS S3 and Ceph RGW give the same strong read-after-write and
atomic single PUTs that SeaweedFS gives, which is all this needs; a bucket lifecycle rule
must not expire ``points/`` or ``chunks/`` objects, and versioning (or object lock) on the
bucket adds protection against a stolen credential deleting points.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn import logs
from cairn.errors import (
    Corruption,
    MissingChunk,
    NotARepository,
    RepositoryExists,
    S3NoSuchBucket,
    UsageError,
)
from cairn.store import (
    cloud_batch,
    cloud_counts,
    cloud_feed,
    cloud_machines,
    cloud_marks,
    cloud_sync,
    marks,
    profiles,
    runs,
)
from cairn.store.blockmap import NodeCache
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ChunkStore, chunk_name
from cairn.store.cloud_packs import DATA_PREFIXES, CloudPacks
from cairn.store.cloudlock import Bucket
from cairn.store.keys import (
    REPOSITORY_ID,
    RepoKey,
    integrity_key_path,
    read_key_file,
    write_key_file,
)
from cairn.store.parallel import bounded_map
from cairn.store.records import Sealer
from cairn.store.repository import (
    DEFAULT_BLOCK_SIZE,
    Repository,
    RepositoryConfig,
    check_block_size,
    check_volume_name,
    private_folder,
)
from cairn.store.verify import expected_refs

if TYPE_CHECKING:
    from cairn.store.backends.s3 import S3Backend
    from cairn.store.backends.s3_lock import Retention
    from cairn.store.immutable import Immutability, Locker

_READERS = 16
"""point records read at once by a sync"""

_POINT_ID = re.compile(r"^[0-9a-f]{8,64}$")
_MAX_SIZE = 1 << 56
RECORD_LIMIT = 1 << 20


def cache_root() -> Path:
    return Path(os.environ.get("CAIRN_CACHE") or Path.home() / ".cache" / "cairn")


def point_object(point: RecoveryPoint) -> str:
    return f"points/{point.volume}/{point.id}.json"


def _tombstone_mac(sealer: Sealer, repository: str, volume: str, point_id: str,
                   micros: int) -> str:
    return sealer.mac({"repository": repository, "volume": volume, "id": point_id,
                       "created_us": micros, "removed": True})[:32]


@dataclass(frozen=True)
class Removed:
    """A point the cloud once held: enough to know its period without fetching anything."""

    id: str
    volume: str
    created: float


class Cloud:
    """The `Remote` of a repository kept in a bucket."""

    def __init__(self, backend: Bucket, where: str, sealer: Sealer, repository_id: str) -> None:
        self.backend = backend
        self.where = where
        self.sealer = sealer
        self.repository_id = repository_id
        self.locker: Locker | None = None
        self._versions: Retention | None = None
        self._ask_versions: Callable[[], Retention | None] | None = None
        self._versions_lock = threading.Lock()
        self._lockable: bool | None = None
        self.cache: Repository | None = None
        """the cache repository this cloud serves (set once it is opened)"""
        self.packs: CloudPacks | None = None
        """where its chunks go (`cloud_packs`; set once it is opened)"""
        self.clock = cloud_feed.Clock()
        """this node's time for feed keys (`cloud_feed`), the server's when that is ahead"""
        self.nearby: ChunkStore | None = None
        """the chunks of the local repository replicating here (same keys, so the same
        digests): block-map nodes are read from it before the bucket (`NodeFiles`)"""
        self.node_files: NodeFiles | None = None
        """the block-map nodes this node keeps on disk (set once it is opened)"""
        self._batches: list[cloud_sync.Batch] = []
        """the batches the last incremental sync listed (`carried_indexes`)"""
        self._batch_reads: dict[str, dict[str, bytes]] = {}
        """what each of those read so far carries: a batch is read once per sync"""

    @property
    def versions(self) -> Retention | None:
        """The bucket's versions on a versioned bucket (every Object Lock bucket), else
        None: see `revive`. Asked of the bucket at first use (`watch_versions`), not when
        the repository opens: the question costs a request, which a command that only
        reads points and chunks (a restore, a listing) never needs, and on a versioned
        bucket an HTTP client to load (httpx: 0.3-0.5 s of CPU)."""
        with self._versions_lock:
            if self._ask_versions is not None:
                ask, self._ask_versions = self._ask_versions, None
                self._versions = ask()
            return self._versions

    @versions.setter
    def versions(self, versions: Retention | None) -> None:
        with self._versions_lock:
            self._ask_versions, self._versions = None, versions

    def watch_versions(self) -> None:
        """On an S3 bucket, learn whether it keeps versions when first needed: a DELETE
        (`Retention.forget`), an object missing (`Retention.behind_marker`), or a use of
        `versions`."""
        from cairn.store.backends.s3 import S3Backend

        backend = self.backend
        if not isinstance(backend, S3Backend):
            return
        with self._versions_lock:
            self._ask_versions = lambda: _versions(backend)
        backend.forget = self._forget
        backend.behind_marker = self._behind_marker

    def _forget(self, name: str) -> None:
        versions = self.versions
        if versions is not None:
            versions.forget(name)

    def _behind_marker(self, name: str, limit: int | None,
                       span: tuple[int, int] | None) -> bytes | None:
        versions = self.versions
        return None if versions is None else versions.behind_marker(name, limit, span)

    def prepare(self, repo: Repository) -> None:
        """Before a write (a replication, a delete): the cache synced. No lock is taken:
        see the module's docstring. At a full sync (its listings are made anyway) a writer
        also brings back what a DELETE under Object Lock only hid (`revive`: readers read
        past it, only writers put it back) and trims the feed's old entries."""
        if self.sync(repo):
            if self.revive(("points", "marks", cloud_machines.PREFIX)):
                self.sync(repo)
            cloud_sync.trim(self.backend, self.backend.delete_many, self.clock.now())

    def announce(self, op: str, name: str) -> str:
        """Tell every node's next sync that ``name`` was put or removed (``op``): a feed
        entry, written once the change is made (`cloud_sync`); returns its name."""
        entry = cloud_sync.entry(cloud_feed.new_key(self.clock.now()), op, name)
        self.backend.put(entry, b"")
        return entry

    def immutable(self, repo: Repository, policy: Immutability) -> None:
        """From now on, put what this node publishes under Object Lock (`immutable`)."""
        from cairn.store.backends.s3 import S3Backend
        from cairn.store.backends.s3_lock import Retention
        from cairn.store.immutable import Locker

        if not isinstance(self.backend, S3Backend):
            raise UsageError(f"{self.where} is not reached through S3: it cannot hold "
                             "immutable points")
        self.locker = Locker(repo, policy, Retention(self.backend),
                             self.packs.objects if self.packs is not None else None)

    def put_chunk(self, name: str, data: bytes, plain: int = 0) -> None:
        """Add a chunk to the packs (`cloud_packs`); ``plain``: its size before
        compression, which its pack's index keeps for nodes that did not send it."""
        assert self.packs is not None
        self.packs.put(name, data, plain=plain)

    def store(self, name: str, data: bytes | memoryview) -> None:
        """Upload one object (a pack, an index): locked to the generation's horizon when
        publishing immutably. A pack comes as a view of a buffer reused once this returns."""
        if self.locker is not None:
            self.locker.put(name, bytes(data))
        else:
            self.backend.put(name, data)

    def publish(self, point: RecoveryPoint) -> float | None:
        """Create the point's record; one already there (a retried PUT that had landed) must
        be this very point. When immutable, every object the point needs is locked first,
        then the record; returns the date they are locked until (else None). Every pack
        put before is uploaded with its index first: a point is published only whole. The
        record is announced in the feed (again, when a retry finds it there), and kept for
        the batches this node writes (`cloud_batch`)."""
        if self.packs is not None:
            self.packs.sync()
        record: dict[str, Any] = point.public()
        record["root"] = point.root.hex()
        record["repository"] = self.repository_id
        name = point_object(point)
        until = None
        if self.locker is not None:
            self.locker.cover(point)
            until = self.locker.horizon()
            record["locked_until"] = until  # sealed and locked with it: `cloud_marks`
        data = json.dumps(self.sealer.seal(record), indent=1).encode()
        if self.locker is not None:
            created = self.locker.publish(name, data, until or 0.0)
        else:
            created = self.backend.put_new(name, data)
        if self.cache is not None:
            cloud_marks.note(self.cache, point.id, record_until=until)
        if not created and self.read_record(name, self.backend.get(name)).root != point.root:
            raise Corruption(f"{name} in {self.where} already holds another point: it was "
                             "planted; remove it")
        entry = self.announce("put", name)
        if created and self.cache is not None:
            cloud_batch.remember(self.cache, {entry: data})
        return until

    def unpublish(self, point: RecoveryPoint) -> None:
        """Tombstone, then record (and marks), then the feed entry naming the tombstone.
        Its chunks stay: only a prune frees space (`cloud_prune`), since another writer
        may be about to publish a point that reuses them."""
        micros = round(point.created * 1_000_000)
        mac = _tombstone_mac(self.sealer, self.repository_id, point.volume, point.id, micros)
        tombstone = f"removed/{point.volume}/{point.id}_{micros}_{mac}"
        self.backend.put(tombstone, b"")
        self.backend.delete(point_object(point))
        self.backend.delete(f"marks/{point.id}.json")
        self.announce("put", tombstone)

    def publish_marks(self, point: RecoveryPoint, point_marks: marks.Marks) -> None:
        """The bucket's copy of a point's marks, which every node's sync reads. Marks that
        became empty are written too, never deleted: a newer record is what makes an older
        one replayed lose (`cloud_marks`)."""
        assert self.cache is not None
        name = f"marks/{point.id}.json"
        seq = cloud_marks.next_seq(self.cache, point.id)
        record = {"repository": self.repository_id, "point": point.id, "seq": seq,
                  **point_marks.json()}
        data = json.dumps(self.sealer.seal(record)).encode()
        if point_marks.locked(time.time()) and self.can_lock():
            assert self.versions is not None and point_marks.locked_until is not None
            self.versions.put(name, data, point_marks.locked_until)
        else:
            self.backend.put(name, data)
        cloud_marks.note(self.cache, point.id, seq=seq)
        cloud_batch.remember(self.cache, {self.announce("put", name): data})

    def can_lock(self) -> bool:
        """Whether marks can go under Object Lock: a lock on a point is then itself locked
        until its date, so deleting ``marks/`` objects cannot make cairn forget it."""
        if self._lockable is None:
            self._lockable = self.versions is not None and self.versions.lock_enabled()
        return self._lockable

    def revive(self, prefixes: tuple[str, ...]) -> list[str]:
        """Bring back the objects under ``prefixes`` that someone deleted while their
        newest version is still under Object Lock (a DELETE there only puts a delete marker
        over it): the marker is removed. A point cairn itself removed (its tombstone,
        which no one without the key can forge, is in ``removed/``) stays removed. Only on
        a versioned bucket; returns the names brought back."""
        if self.versions is None:
            return []
        now = time.time()
        back = [n for n in self._hidden(prefixes) if self.versions.unhide(n, now)]
        for name in back:
            logs.event("cloud.locked_object_restored", object=name, where=self.where)
        return back

    def _hidden(self, prefixes: tuple[str, ...]) -> list[str]:
        """Objects under ``prefixes`` hidden behind a delete marker, but for points cairn
        itself removed (their tombstones say so); whether a locked version lies under the
        marker is for the caller to find out."""
        if self.versions is None:
            return []
        hidden = [n for prefix in prefixes for n in self.versions.hidden(prefix)]
        if not hidden:
            return []
        removed = {r.id for r in self.removed()}
        return [n for n in hidden if n.partition("/")[0] in DATA_PREFIXES
                or n.rpartition("/")[2].removesuffix(".json") not in removed]

    def locked_hidden(self, prefix: str) -> list[str]:
        """Records under ``prefix`` an intruder hid behind a delete marker while they are
        still locked: a full sync reads them past the marker (`S3Backend.behind_marker`)."""
        return [n for n in self._hidden((prefix,)) if self.backend.exists(n)]

    def _mark_records(self, prefix: str) -> list[tuple[str, str | None]]:
        """Each marks record under ``prefix`` to read, as (name, version): in a versioned
        bucket every version of every name (an older one put back must not win:
        `cloud_marks`), else the current objects (version None)."""
        if self.versions is None:
            return [(name, None) for name in self.backend.list(prefix)]
        return [(e.name, e.version) for e in self.versions.entries(prefix) if not e.marker]

    def _read_marks(self) -> dict[str, cloud_marks.Sealed]:
        """Every point's newest marks in the bucket (a full sync's), each sealed and bound
        to its name."""
        found: dict[str, cloud_marks.Sealed] = {}
        for name, version in self._mark_records("marks"):
            parts = name.split("/")
            point_id = parts[-1].removesuffix(".json")
            if len(parts) != 2 or not _POINT_ID.match(point_id) or not name.endswith(".json"):
                raise Corruption(f"object {name!r} in {self.where} is not a mark cairn "
                                 "writes: someone else wrote to the bucket; remove it")
            try:
                raw = self.backend.get(name) if version is None or self.versions is None \
                    else self.versions.version(name, version)
            except KeyError:
                continue  # removed since the listing
            sealed = self._open_marks(name, point_id, raw)
            if point_id not in found or sealed.seq > found[point_id].seq:
                found[point_id] = sealed
        return found

    def _take_marks(self, repo: Repository, named: dict[str, str],
                    carried: dict[str, bytes]) -> int:
        """An incremental sync's marks: the current record of each point ``named`` (point
        id -> its newest feed entry), from the batch's copy where ``carried`` has one that
        opens, else read: a replayed older one loses to the seq this node took before
        (`cloud_marks`), and a node that took none syncs in full, reading every version.
        The records are kept for this node's batches; returns how many were read."""
        found: dict[str, cloud_marks.Sealed] = {}
        raws: dict[str, bytes] = {}
        fetched = 0
        for point_id, entry in sorted(named.items()):
            name = f"marks/{point_id}.json"
            sealed = self._copy_of_marks(name, point_id, carried.get(entry))
            raw = carried.get(entry, b"")
            if sealed is None:
                try:
                    raw = self.backend.get(name)
                except KeyError:
                    continue  # removed since the listing
                fetched += 1
                sealed = self._open_marks(name, point_id, raw)
            found[point_id], raws[entry] = sealed, raw
        marks.replace_marks(repo, cloud_marks.merge(repo, found, self.where, only=named))
        cloud_batch.remember(repo, raws)
        return fetched

    def _copy_of_marks(self, name: str, point_id: str, raw: bytes | None
                       ) -> cloud_marks.Sealed | None:
        """A batch's copy of a marks record, opened as one read; None when there is none or
        it fails (the record itself decides)."""
        return cloud_batch.opened(raw, partial(self._open_marks, name, point_id))

    def _open_marks(self, name: str, point_id: str, raw: bytes) -> cloud_marks.Sealed:
        what = f"marks record {name} in {self.where}"
        record = self.sealer.open(raw, what)
        try:
            valid = (record.get("repository") == self.repository_id
                     and record.get("point") == point_id)
            sealed = cloud_marks.Sealed(marks.Marks.from_json(record),
                                        int(record.get("seq") or 0))
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise Corruption(f"{what} does not belong at that name in this repository: "
                             "it was moved or altered; restore it from a copy or remove it")
        return sealed

    def removed(self) -> list[Removed]:
        """Every point deleted from the bucket, as this cache's syncs found them: a full
        sync lists ``removed/``, the others take the feed's new tombstones (`cloud_sync`)."""
        assert self.cache is not None
        return [Removed(*row) for row in cloud_sync.removed(self.cache)]

    def _tombstone(self, name: str) -> Removed | None:
        """The point a ``removed/`` name records; None for a name cairn never writes or a
        MAC that fails (a forged tombstone: the point is then sent again, the safe side)."""
        parts = name.split("/")
        fields = parts[-1].split("_") if len(parts) == 3 else []
        if len(fields) != 3 or not _POINT_ID.match(fields[0]) or not fields[1].isdigit():
            return None
        point_id, micros, mac = fields[0], int(fields[1]), fields[2]
        want = _tombstone_mac(self.sealer, self.repository_id, parts[1], point_id, micros)
        if not hmac.compare_digest(want.encode(), mac.encode("utf-8", "surrogatepass")):
            return None
        return Removed(point_id, parts[1], micros / 1_000_000)

    def _learn_removed(self, repo: Repository, names: Iterable[str], every: bool) -> None:
        found = [t for t in map(self._tombstone, names) if t is not None]
        cloud_sync.learn_removed(repo, [(t.id, t.volume, t.created) for t in found], every)

    def sync(self, repo: Repository, full: bool = False) -> bool:
        """Bring the cache catalog to the bucket's set of points; True when it listed every
        prefix (a full sync: the first, then one a day, or when ``full`` asks, as verify
        does), else it took only the feed's entries since the last sync (`cloud_sync`).

        Points new to the cache enter by the delete rule reversed, in creation order, so
        every reference count ends as if this node had seen every change itself. Points gone
        from the bucket were deleted by another node, which may already have removed the
        nodes of their block maps: the counts are then recounted from the remaining points
        (`verify.expected_refs`). Their chunks are the prune's to free. A sync that read
        many records one by one then writes a batch of them for the others (`cloud_batch`).
        """
        batch = False
        with repo.catalog.transaction():
            state = cloud_sync.load(repo)
            now = time.time()
            full = full or state.due_full(now)
            if full:
                cursor = self.clock.now()
                self._full(repo)
                state.after_full(cursor, now)
            else:
                batch = self._since(repo, state, now)
            cloud_sync.save(repo, state)
        if batch:
            cloud_batch.write(self, repo)
        return full

    def _full(self, repo: Repository) -> None:
        """The full sync; the listing is taken inside the catalog's write lock, so a
        point another local process is publishing is either seen or added by it later.
        Nothing is written to the bucket: a record hidden behind a delete marker while
        still locked is read past the marker (`S3Backend.behind_marker`). Marks this cache
        held before the listing for a point it neither has nor lists go: that point's record
        is gone (`marks`)."""
        orphans = marks.orphans(repo)
        self._learn_removed(repo, self.backend.list("removed"), every=True)
        remote: dict[str, str] = {}
        hidden = self.locked_hidden("points")
        listed = list(self.backend.stamps("points"))
        self._learn_time(listed)
        for name in [*(n for n, _ in listed), *hidden]:
            point_id = self._point_id_of(name)
            if point_id in remote and remote[point_id] != name:
                raise Corruption(f"objects {remote[point_id]} and {name} in {self.where} "
                                 "claim the same point: one was planted; remove it")
            remote[point_id] = name
        local = {p.id: p for p in repo.catalog.points()}
        gone = {i for i in local.keys() - remote.keys()
                if not self.backend.exists(point_object(local[i]))}
        unread = remote.keys() - (local.keys() & cloud_marks.known(repo))
        arrivals = [p for p, _raw, _get in self._read_points(repo, [remote[i] for i in unread])
                    if p.id not in local]
        self._change(repo, arrivals, gone)
        merged = cloud_marks.merge(repo, self._read_marks(), self.where)
        marks.replace_marks(repo, merged | {i: marks.Marks() for i in orphans - remote.keys()})
        cloud_machines.sync(self, repo)

    def _since(self, repo: Repository, state: cloud_sync.State, now: float) -> bool:
        """The incremental sync: the feed's entries after the newest one taken (or, once
        every `cloud_sync.rescan_every`, after the last windowed listing's cursor less the
        window) that this cache has not taken, their records read from the batches listed
        with them where they carry them; ``state`` moves on. True when this sync read
        enough records one by one to write a batch (`cloud_batch`)."""
        last = None if state.due_scan(now) else cloud_sync.tail(repo)
        if last is None:
            start = state.cursor if state.scan_from is None else state.scan_from
            listed = list(cloud_feed.since(self.backend, cloud_sync.FEED, start))
        else:
            listed = list(cloud_feed.after(self.backend, cloud_sync.FEED, last))
        self._learn_time(listed)
        entries = [e for e in map(cloud_sync.parse, (n for n, _ in listed)) if e is not None]
        batches = [b for b in map(cloud_sync.parse_batch, (n for n, _ in listed))
                   if b is not None]
        self._batches, self._batch_reads = batches, {}
        cursor = cloud_feed.newest([e.name for e in entries], state.cursor)
        if last is None:
            state.scanned(cursor, now)
        else:
            state.cursor = cursor
        new = cloud_sync.unseen(repo, entries)
        fetched = self._take(repo, new, batches) if new else 0
        if new or batches:
            cloud_sync.note_seen(repo, [*(e.name for e in new), *(b.name for b in batches)],
                                 state)
        return cloud_batch.due(repo, fetched, self.clock.now())

    def _take(self, repo: Repository, entries: list[cloud_sync.Entry],
              batches: list[cloud_sync.Batch]) -> int:
        """Apply feed entries: read the records they name (from ``batches`` where they
        carry them), forget the points whose tombstone came and whose record a HEAD says
        is gone, read the marks named. Returns how many records were read one by one."""
        puts = sorted({e.target for e in entries if e.op == "put"})
        self._learn_removed(repo, (n for n in puts if n.startswith("removed/")), every=False)
        gone = set()
        for name in (n for n in puts if n.startswith("removed/")):
            tombstone = self._tombstone(name)
            point = repo.catalog.point(tombstone.id) if tombstone else None
            if point is not None and not self.backend.exists(point_object(point)):
                gone.add(point.id)
        newest = _newest_puts(entries)
        carried = self._carried(repo, newest, {e.target for e in entries if e.op == "del"},
                                batches)
        fetched = self._take_records(repo, newest, carried, gone)
        named = {t[len("marks/"):-len(".json")]: e for t, e in newest.items()
                 if t.startswith("marks/") and t.endswith(".json") and t.count("/") == 1}
        named = {i: e for i, e in named.items() if _POINT_ID.match(i)}
        if named:
            fetched += self._take_marks(repo, named, carried)
        return fetched + cloud_machines.take(
            self, repo, [e for e in entries if e.target.startswith(f"{cloud_machines.PREFIX}/")],
            carried)

    def _take_records(self, repo: Repository, newest: dict[str, str],
                      carried: dict[str, bytes], gone: set[str]) -> int:
        """Add the points whose records the feed announces (``newest``: object name -> its
        newest put entry) and forget those ``gone``; the records read are kept for this
        node's batches. Returns how many were read one by one (not from a batch)."""
        targets = {t: e for t, e in newest.items() if t.startswith("points/")
                   and self._is_record(t) and repo.catalog.point(self._point_id_of(t)) is None}
        copies = {t: carried[e] for t, e in targets.items() if e in carried}
        found = self._read_points(repo, sorted(targets), copies)
        self._change(repo, [p for p, _raw, _get in found], gone)
        cloud_batch.remember(repo, {targets[point_object(p)]: raw for p, raw, _get in found})
        return sum(got for _p, _raw, got in found)

    def _carried(self, repo: Repository, newest: dict[str, str], dropped: set[str],
                 batches: list[cloud_sync.Batch]) -> dict[str, bytes]:
        """The records (by feed entry) that ``batches`` carry of those ``newest`` announces
        (object name -> its newest put entry), but for an object whose removal the same
        listing announces (``dropped``), and for the point records and marks of points
        whose tombstone this cache knows: those are read one by one, as before batches
        (`cloud_batch`)."""
        if not batches or not newest:
            return {}
        removed = {row[0] for row in cloud_sync.removed(repo)}
        wanted = {e for t, e in newest.items() if t not in dropped and self._new_record(
            repo, t, removed)}
        got = cloud_batch.gather(batches, wanted, self._read_batch)
        if self.packs is not None:
            self.packs.offer(got)  # the indexes it carries: read by the refresh that follows
        return {entry: raw for entry, raw in got.items() if entry in wanted}

    def _read_batch(self, batch: cloud_sync.Batch) -> dict[str, bytes]:
        if batch.name not in self._batch_reads:
            self._batch_reads[batch.name] = cloud_batch.read(self, batch)
        return self._batch_reads[batch.name]

    def carried_indexes(self, names: list[str]) -> dict[str, bytes]:
        """The texts of the index objects ``names`` (new to a `CloudPacks.refresh`, which
        opens each as one read) that the batches the last sync listed carry, when there
        are enough of them to be worth a batch's GET (`cloud_batch.batch_min`): the
        indexes of packs whose points are not published yet, which no record brings."""
        if len(names) < cloud_batch.batch_min() or not self._batches:
            return {}
        return cloud_batch.gather(self._batches, names, self._read_batch,
                                  cloud_batch.may_carry_index)

    def _new_record(self, repo: Repository, name: str, removed: set[str]) -> bool:
        """Whether a batch may stand in for a read of ``name``: a point record or marks
        record of a point with no tombstone known, new to the cache for a point record, or
        a machine point record new to the cache."""
        leaf = name.rpartition("/")[2].removesuffix(".json")
        if name.startswith("points/"):
            return self._is_record(name) and leaf not in removed \
                and repo.catalog.point(leaf) is None
        if name.startswith("marks/"):
            return leaf not in removed
        return name.startswith(f"{cloud_machines.PREFIX}/") \
            and cloud_machines.is_new(repo, leaf)

    def _is_record(self, name: str) -> bool:
        try:
            self._point_id_of(name)
        except Corruption:
            return False  # the feed is only a hint: a name cairn never writes is skipped
        return True

    def _learn_time(self, listed: list[tuple[str, float]]) -> None:
        """The server's clock was at least the newest LastModified listed (`Clock`)."""
        if listed:
            self.clock.learn(max(stamp for _, stamp in listed))

    def _read_points(self, repo: Repository, names: list[str],
                     carried: dict[str, bytes] | None = None
                     ) -> list[tuple[RecoveryPoint, bytes, bool]]:
        """The points whose records are ``names``, each authenticated, with the record's
        bytes and whether it was read from the bucket (True) or ``carried`` by a batch: the
        others are read in parallel, and so is a carried copy that fails to open. A record
        deleted since it was listed (or hidden, its lock passed) is skipped."""
        if not names:
            return []
        copies = carried or {}

        def read(name: str) -> tuple[RecoveryPoint, float | None, bytes, bool] | None:
            carried = cloud_batch.opened(copies.get(name), partial(self._open_record, name))
            if carried is not None:
                return *carried, copies[name], False
            try:
                raw = self.backend.get(name)
            except KeyError:
                return None
            return *self._open_record(name, raw), raw, True

        found = [r for r in bounded_map(read, names, _READERS) if r is not None]
        for point, until, _raw, _got in found:
            cloud_marks.note(repo, point.id, record_until=until)
        return [(point, raw, got) for point, _until, raw, got in found]

    def _change(self, repo: Repository, arrivals: list[RecoveryPoint], gone: set[str]) -> None:
        """Forget the points ``gone`` (counts recounted), then add ``arrivals`` in creation
        order; the sizes of the chunks learnt follow. The packs' indexes are read first:
        an arrival's packs and indexes were all in place before its record."""
        if arrivals and self.packs is not None:
            self.packs.refresh()
        if gone:
            skip = cloud_counts.uncounted(repo)
            counted = [p for p in repo.catalog.points() if p.id in gone
                       and p.volume_id not in skip]
            repo.catalog.forget_points(gone)
            if counted:
                repo.catalog.recount(expected_refs(repo, repo.nodes))
        for point in sorted(arrivals, key=lambda p: p.created):
            self.learn(repo, point)
        if arrivals or gone:
            self.learn_sizes(repo)

    def learn_sizes(self, repo: Repository) -> None:
        """The stored size of each chunk this cache learnt with a point another node sent,
        from the pack indexes (`cloud_packs`), else, for legacy chunk objects, from a
        listing of the bucket (no chunk is read): only when points arrived, listing just
        the folders of those chunks (``chunks/abc/``), or ``chunks/`` whole when that takes
        fewer requests (a thousand objects each). Sizes before compression come with them
        from the indexes that carry them (packs written since 2026-12-01); those of older
        packs and of legacy objects stay unknown: only the node that sent them knows."""
        unsized = repo.catalog.unsized_chunks()
        if unsized and self.packs is not None:
            self.packs.refresh()
            packed = self.packs.locations(unsized)
            repo.catalog.learn_stored({d: length for d, (_p, _o, length) in packed.items()})
            repo.catalog.learn_plain(self.packs.plain_sizes(packed))
            unsized = [d for d in unsized if d not in packed]
        wanted = {chunk_name(h): h for h in unsized}
        if not wanted:
            return
        folders = sorted({name.rpartition("/")[0] for name in wanted})
        if len(folders) > repo.catalog.chunk_totals().chunks // 1000 + 1:
            folders = ["chunks"]
        repo.catalog.learn_stored({wanted[name]: size for folder in folders
                                   for name, size in self.backend.sizes(folder)
                                   if name in wanted})

    def _point_id_of(self, name: str) -> str:
        """The point id in a ``points/`` object name, which must be one cairn writes."""
        parts = name.split("/")
        if (len(parts) != 3 or not parts[2].endswith(".json")
                or not _POINT_ID.match(parts[2][: -len(".json")])):
            raise Corruption(f"object {name!r} in {self.where} is not a point record cairn "
                             "writes: someone else wrote to the bucket; remove it")
        return parts[2][: -len(".json")]

    def read_record(self, name: str, raw: bytes) -> RecoveryPoint:
        """A point from its record, once sealed, bound to this repository and its own
        object name, and every field of the type and range cairn writes."""
        return self._open_record(name, raw)[0]

    def _open_record(self, name: str, raw: bytes) -> tuple[RecoveryPoint, float | None]:
        """`read_record`, and the lock date sealed into the record (immutable points)."""
        what = f"point record {name} in {self.where}"
        record = self.sealer.open(raw, what)
        try:
            point = RecoveryPoint(
                id=record["id"], volume=check_volume_name(record["volume"]), volume_id=0,
                seq=0, created=float(record["created"]), size=int(record["size"]),
                root=bytes.fromhex(record["root"]), allocated=int(record["allocated"]),
                bytes_read=int(record["bytes_read"]), bytes_stored=int(record["bytes_stored"]),
                seconds=float(record["seconds"]), source=str(record["source"]))
            until = record.get("locked_until")
            until = None if until is None else float(until)
            valid = (record.get("repository") == self.repository_id
                     and name == point_object(point) and len(point.root) == 32
                     and 0 < point.size <= _MAX_SIZE and math.isfinite(point.created))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, UsageError):
            valid = False  # OverflowError: a size of 1e999, a time of 10**400
        if not valid:
            raise Corruption(f"{what} does not belong at that name in this repository: it "
                             "was moved or altered; restore it from a copy or remove it")
        return point, until

    def learn(self, repo: Repository, point: RecoveryPoint) -> RecoveryPoint:
        """Add one published point to the cache catalog: by its record alone in a volume
        this cache does not count (its block map is read when something walks it), else
        with its runs (`cloud_counts`)."""
        recorded = cloud_counts.add_record(repo, point)
        if recorded is not None:
            return recorded
        volume = repo.catalog.ensure_volume(point.volume)
        return self.insert(repo, RecoveryPoint(**{**point.__dict__, "volume_id": volume.id}),
                           {})

    @staticmethod
    def insert(repo: Repository, point: RecoveryPoint,
               written: dict[bytes, tuple[int, int]]) -> RecoveryPoint:
        """Put ``point`` in its place by creation time; its runs are the delete rule reversed.

        One transaction from reading the neighbours to the commit: another process sharing
        this cache (a second replication, a sync) cannot slip a point in between, and a
        point it already added is not added twice.
        """
        with repo.catalog.transaction():
            committed = repo.catalog.point(point.id)
            if committed is not None:
                return committed
            cloud_counts.settle(repo, [point.volume_id])  # runs are added: count it first
            placed = RecoveryPoint(**{**point.__dict__, "seq": int(point.created * 1_000_000)})
            prev, nxt = repo.catalog.neighbours(placed)
            increments = runs.delete_decrements(
                repo.nodes, repo.tree(prev) if prev else None, repo.tree(placed),
                repo.tree(nxt) if nxt else None)
            repo.catalog.commit_point(None, placed, increments, written, append=False)
            committed = repo.catalog.point(point.id)
        assert committed is not None
        return committed


def _open_backend(url: str, endpoint: str | None) -> S3Backend:
    """The bucket at ``url``: at ``endpoint`` (or the environment's) when given, else where
    this node's profile of ``url`` says (`profiles`)."""
    from cairn.store.backends.s3 import env_endpoint, open_s3_url

    profile = profiles.load(url)
    if profile is not None and (endpoint or env_endpoint() or profile.endpoint) \
            .rstrip("/") == profile.endpoint.rstrip("/"):
        backend = open_s3_url(url, profile.endpoint, region=profile.region,
                              path_style=profile.path_style)
    else:
        backend = open_s3_url(url, endpoint)
    backend.max_object = RECORD_LIMIT  # until the config names the block size
    return backend


def _remember(url: str, backend: S3Backend) -> None:
    """Save where ``url`` was found, for the commands that follow (`profiles`)."""
    profiles.save(url, profiles.Profile(backend.endpoint, backend.region, backend.path_style))


class NodeFiles:
    """Block-map nodes kept on local disk once fetched: every point walk, sync and browse
    of a cloud repository reads them again, and they never change. Each is checked against
    its hash when read back, like any chunk."""

    def __init__(self, folder: Path, repo: Repository) -> None:
        self.folder = folder
        self.repo = repo
        folder.mkdir(exist_ok=True)

    def __call__(self, digest: bytes) -> bytes:
        path = self.folder / digest.hex()
        try:
            node = path.read_bytes()
            if self.repo.chunks.hash(node) == digest:
                return node
        except FileNotFoundError:
            pass
        node = self._nearby(digest) or self.repo.chunks.get(digest)
        tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(node)
        tmp.rename(path)
        return node

    def load(self, digests: list[bytes]) -> list[bytes]:
        """Those of ``digests`` not on local disk yet, read in one batch (a pack's
        neighbours in one ranged GET, `CloudPacks.get_many`) and kept; returns them. A
        prune's first walk of many points reads their block maps so, a level at a time
        (`cloud_live`), instead of one GET per node as the walk meets it."""
        wanted = [d for d in digests if not (self.folder / d.hex()).exists()]

        def keep(digest: bytes, node: bytes) -> bytes:
            tmp = self.folder / f"{digest.hex()}.{os.getpid()}-{threading.get_ident()}.tmp"
            tmp.write_bytes(node)
            tmp.rename(self.folder / digest.hex())
            return node

        return list(self.repo.chunks.get_many(wanted, keep)) if wanted else []

    def _nearby(self, digest: bytes) -> bytes | None:
        """The node from the local repository a replication reads (`Cloud.nearby`): the
        writer's own new block map is not fetched back from the bucket."""
        nearby = getattr(self.repo.remote, "nearby", None)
        if nearby is None:
            return None
        try:
            return nearby.get(digest)
        except (MissingChunk, Corruption):
            return None


def _newest_puts(entries: list[cloud_sync.Entry]) -> dict[str, str]:
    """Object name -> the newest feed entry announcing it was put (a marks record is
    written again and again: a batch's copy is taken for its newest entry only)."""
    return {e.target: e.name for e in sorted(entries, key=lambda e: e.name) if e.op == "put"}


def _versions(backend: S3Backend) -> Retention | None:
    """In a versioned bucket (every Object Lock bucket) a DELETE only hides an object behind
    a marker and frees nothing: there cairn's deletes also delete the object's versions
    whose lock has passed (`Retention.forget`), so prune frees what no locked point needs;
    and what others hid while locked comes back (`Cloud.revive`). The question itself costs
    no HTTP library beyond the standard one (`s3_bucket`): most buckets keep no versions."""
    from cairn.store.backends.s3_bucket import versioning_enabled

    if not versioning_enabled(backend.endpoint, backend.bucket,
                              backend.credentials):
        return None
    from cairn.store.backends.s3_lock import Retention

    return Retention(backend)


def _repository(url: str, backend: Bucket, config: RepositoryConfig,
                key: RepoKey) -> Repository:
    """Open the repository whose config was just authenticated with ``key``."""
    assert REPOSITORY_ID.match(config.id)
    check_block_size(config.block_size)
    folder = cache_root() / config.id
    private_folder(folder)
    cloud = Cloud(backend, url, Sealer(key.secret), config.id)
    cloud.watch_versions()
    cloud.packs = CloudPacks(backend, folder, cloud.sealer, config.id, url)
    cloud.packs.store = cloud.store
    cloud.packs.hidden = lambda: cloud._hidden(("index",))
    cloud.packs.carrier = cloud.carried_indexes
    repo = Repository(url, folder, config, cloud.packs,
                      key.secret if key.encrypts else None, cloud)
    repo.chunks.locate = cloud.packs.describe
    cloud.cache = repo
    backend.max_object = repo.chunks.max_stored
    cloud.packs.largest = repo.chunks.max_size
    cloud.node_files = NodeFiles(folder / "nodes", repo)
    repo.nodes = NodeCache(cloud.node_files)
    if cloud_counts.migrate(repo):
        logs.event("cloud.cache_counts_dropped", where=url, cache=str(folder))
    cloud.sync(repo)
    return repo


def init_cloud(url: str, endpoint: str | None, block_size: int = DEFAULT_BLOCK_SIZE,
               key_file: Path | None = None, where: profiles.Profile | None = None
               ) -> Repository:
    """A new repository in a bucket. With ``key_file`` an encryption key (normally the
    local repository's, so replication sends chunks as they are) encrypts its chunks, and
    an integrity key only authenticates; without one a new integrity key is written to
    `keys.integrity_key_path`. A missing bucket is created; a location that holds objects
    but no repository is refused (it is someone else's data). ``where`` (endpoint, region,
    addressing) overrides ``endpoint``; either is remembered in this node's profile."""
    if where is None:
        backend = _open_backend(url, endpoint)
    else:
        from cairn.store.backends.s3 import open_s3_url

        backend = open_s3_url(url, where.endpoint, region=where.region,
                              path_style=where.path_style)
        backend.max_object = RECORD_LIMIT
    check_block_size(block_size)
    try:
        backend.check_bucket()
    except S3NoSuchBucket:
        backend.create_bucket()
    if backend.exists("config.json"):
        raise RepositoryExists(url)
    if not backend.is_empty():
        raise UsageError(f"{url} is not empty and holds no cairn repository: give an empty "
                         "bucket or a new prefix (s3://BUCKET/NEW-PREFIX)")
    repository_id = os.urandom(16).hex()
    if key_file is not None:
        key = read_key_file(key_file)
    else:
        key = write_key_file(integrity_key_path(repository_id), encrypts=False)
    config = RepositoryConfig(id=repository_id, block_size=block_size,
                              key_id=key.id if key.encrypts else None,
                              integrity_id=None if key.encrypts else key.id)
    sealed = Sealer(key.secret).seal(asdict(config))
    backend.put("config.json", (json.dumps(sealed, indent=2) + "\n").encode())
    _remember(url, backend)
    return _repository(url, backend, config, key)


def _cloud_key(config: RepositoryConfig, key_file: Path | None, url: str) -> RepoKey:
    """The key that opens ``url``: the one given, else this node's integrity key for it.

    The config is not yet authenticated here, so a key id it lacks or changes is refused
    rather than read as "not encrypted": a repository opened with a key never falls back
    to plain text.
    """
    if key_file is None:
        if config.key_id is not None:
            raise UsageError(f"{url} is encrypted: pass --key-file (or set CAIRN_KEY_FILE) "
                             "to the key it was created with")
        key_file = integrity_key_path(str(config.id))
        if not key_file.exists():
            raise UsageError(f"no key on this node for {url} (repository {config.id} by its "
                             "config.json): pass --key-file, or copy the integrity key "
                             f"`cairn init` wrote for it to {key_file}")
    key = read_key_file(key_file)
    if not key.encrypts and config.key_id is not None:
        raise UsageError(f"{url} is encrypted: pass --key-file to its encryption key, not "
                         f"the integrity key {key_file}")
    expected = config.key_id if key.encrypts else config.integrity_id
    if expected is None:
        kind = "encryption" if key.encrypts else "integrity"
        raise Corruption(f"config.json of {url} names no {kind} key although {key_file} is "
                         "one: the bucket's config was altered; refusing to use it (restore "
                         "config.json from a copy)")
    if expected != key.id:
        raise UsageError(f"{key_file} is not the key of {url}: give the key file it was "
                         "created with")
    return key


def open_cloud(url: str, endpoint: str | None, key_file: Path | None = None,
               bucket: Bucket | None = None) -> Repository:
    """The repository at ``url``; ``bucket`` reaches its objects through another layer
    over the same bucket (the tests' fault injection)."""
    backend = bucket or _open_backend(url, endpoint)
    backend.max_object = RECORD_LIMIT
    try:
        raw = backend.get("config.json")
        config = RepositoryConfig.from_json(json.loads(raw), url)
    except (KeyError, ValueError, TypeError, RecursionError):
        raise NotARepository(url) from None
    key = _cloud_key(config, key_file, url)
    Sealer(key.secret).open(raw, f"config.json of {url}")
    if bucket is None and profiles.load(url) is None:
        _remember(url, backend)
    return _repository(url, backend, config, key)
