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
    locks/<random>.json              writers' locks: {exclusive, host, pid, command, time}
    removed/<volume>/<point id>_<created µs>_<mac>  a point that was here and was deleted

``points/`` and ``removed/`` together record every point ever sent: replication never sends
a point again that the cloud's retention (or anyone) removed, whichever appliance or cache
replicates. A tombstone is written before its point object goes, so a crash between the two
leaves both (the point is still there; nothing is sent twice). Its name carries everything
(one listing reads them all) including a MAC, so a forged tombstone is ignored (the point is
then sent again, the safe side).

Nothing on local disk is needed to use the bucket: the cache folder
(``$CAIRN_CACHE`` or ``~/.cache/cairn``, one folder per repository id) holds a catalog that
`Cloud.sync` rebuilds from the ``points/`` objects (reference counts are recomputed by the
run rule, see `runs`), plus this node's clones. Any node can be lost and another rebuilds.

Writers (restic's scheme): each takes a lock object; a replication takes it *shared*, a
delete or prune *exclusive*. An exclusive holder is alone, so it can sync, unpublish points
and unlink the chunks they alone held knowing no other node counts on them. The lock, its
refresh, and how staleness is judged by the server's clock: `cloudlock`. A holder whose
lock lapsed publishes, unpublishes and sweeps nothing more (`LockLost`).

A listing is never trusted to say an object is gone: a point the cache knows leaves it only
once a HEAD confirms its object is gone, a sweep runs only when a second listing of points
agrees with the cache, never with no point known, and never deletes a chunk younger than
the longest lock lifetime (a replication whose lock lapsed may still be about to publish).
Point records are created with ``If-None-Match`` where the server supports it. Commands
that only read write nothing to the bucket: an object hidden by a DELETE while under
Object Lock is read past its delete marker, and only writers put it back (`revive`).

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn import logs
from cairn.errors import Corruption, NotARepository, RepositoryExists, S3NoSuchBucket, UsageError
from cairn.store import cloud_machines, cloud_marks, marks, profiles, runs
from cairn.store.blockmap import NodeCache
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import chunk_name
from cairn.store.cloud_packs import DATA_PREFIXES, CloudPacks
from cairn.store.cloudlock import Bucket, RemoteLock, lifetime
from cairn.store.keys import (
    REPOSITORY_ID,
    RepoKey,
    integrity_key_path,
    read_key_file,
    write_key_file,
)
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

SWEEP_MARKER = "sweep-needed"
MARKER_TEXT = b"an exclusive writer is at work\n"

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
        self._exclusive = 0
        self._held: list[RemoteLock] = []
        self.locker: Locker | None = None
        self.versions: Retention | None = None
        """set on a versioned bucket (every Object Lock bucket): see `revive`"""
        self._lockable: bool | None = None
        self.cache: Repository | None = None
        """the cache repository this cloud serves (set once it is opened)"""
        self.packs: CloudPacks | None = None
        """where its chunks go (`cloud_packs`; set once it is opened)"""

    @property
    def exclusive_held(self) -> bool:
        return self._exclusive > 0

    @contextmanager
    def lock(self, repo: Repository, exclusive: bool) -> Iterator[RemoteLock]:
        """Hold the writers' lock with the cache synced. A writer also brings back what a
        DELETE under Object Lock only hid (`revive`): readers read past it, never write.

        An exclusive holder also leaves ``SWEEP_MARKER`` in the bucket while it works: if it
        dies midway (after unpublishing points, before unlinking their chunks), the next
        exclusive holder finds the marker and sweeps the chunks no point counts.
        """
        lock = RemoteLock(self.backend, exclusive, self.where).acquire()
        self._exclusive += exclusive
        self._held.append(lock)
        try:
            self.revive(("points", "marks", *DATA_PREFIXES) if exclusive
                        else ("points", "marks"))
            self.sync(repo)
            if exclusive:
                if self.backend.exists(SWEEP_MARKER):
                    self.sweep(repo)
                self.backend.put(SWEEP_MARKER, MARKER_TEXT)
            yield lock
            if exclusive:
                self.backend.delete(SWEEP_MARKER)
        finally:
            self._exclusive -= exclusive
            self._held.remove(lock)
            lock.release()

    def check_lock(self) -> None:
        """Before any write that others must be able to count on: every lock still live."""
        for lock in self._held:
            lock.check()

    def sweep(self, repo: Repository) -> int:
        """Delete chunk objects that no point counts; only under the exclusive lock, with the
        cache just synced, so nothing any node relies on can be among them. A listing error
        raises and deletes nothing."""
        assert self.exclusive_held
        self.check_lock()
        self.backend.put(SWEEP_MARKER, MARKER_TEXT)
        now = self.backend.stamp(SWEEP_MARKER)
        if not self._listing_agrees(repo):
            return 0
        known = {chunk_name(h) for h in repo.catalog.chunk_refs()}
        grace = lifetime()
        stray = [name for name, stamp in list(self.backend.stamps("chunks"))
                 if name not in known and now - stamp > grace]
        self.check_lock()
        for name in stray:
            self.backend.delete(name)
        return len(stray)

    def _listing_agrees(self, repo: Repository) -> bool:
        """A second listing of points names exactly the points the cache knows (and there
        are some): an empty or partial listing then stops the sweep instead of letting it
        read live chunks as stray."""
        listed = {self._point_id_of(name) for name in self.backend.list("points")}
        known = {p.id for p in repo.catalog.points()}
        if known and listed == known:
            return True
        logs.event("cloud.sweep_skipped", known=len(known), listed=len(listed))
        return False

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

    def put_chunk(self, name: str, data: bytes) -> None:
        """Add a chunk to the packs (`cloud_packs`). A writer whose lock lapsed stops
        here, at its next chunk, not at its publish: what it would send meanwhile a prune
        may already count as stray."""
        self.check_lock()
        assert self.packs is not None
        self.packs.put(name, data)

    def store(self, name: str, data: bytes) -> None:
        """Upload one object (a pack, an index): locked to the generation's horizon when
        publishing immutably."""
        if self.locker is not None:
            self.locker.put(name, data)
        else:
            self.backend.put(name, data)

    def publish(self, point: RecoveryPoint) -> float | None:
        """Create the point's record; one already there (a retried PUT that had landed) must
        be this very point. When immutable, every object the point needs is locked first,
        then the record; returns the date they are locked until (else None). Every pack
        put before is uploaded with its index first: a point is published only whole."""
        if self.packs is not None:
            self.packs.sync()
        self.check_lock()
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
        if created:
            return until
        if self.read_record(name, self.backend.get(name)).root != point.root:
            raise Corruption(f"{name} in {self.where} already holds another point: it was "
                             "planted; remove it")
        return until

    def unpublish(self, point: RecoveryPoint) -> None:
        self.check_lock()
        micros = round(point.created * 1_000_000)
        mac = _tombstone_mac(self.sealer, self.repository_id, point.volume, point.id, micros)
        self.backend.put(f"removed/{point.volume}/{point.id}_{micros}_{mac}", b"")
        self.backend.delete(point_object(point))
        self.backend.delete(f"marks/{point.id}.json")

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
        if point_marks.locked(time.time()) and self._can_lock():
            assert self.versions is not None and point_marks.locked_until is not None
            self.versions.put(name, data, point_marks.locked_until)
        else:
            self.backend.put(name, data)
        cloud_marks.note(self.cache, point.id, seq=seq)

    def _can_lock(self) -> bool:
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

    def _mark_records(self) -> list[tuple[str, str | None]]:
        """Each marks record to read, as (name, version): in a versioned bucket every
        version of every name (an older one put back must not win: `cloud_marks`), else
        the current objects (version None)."""
        if self.versions is None:
            return [(name, None) for name in self.backend.list("marks")]
        return [(e.name, e.version) for e in self.versions.entries("marks") if not e.marker]

    def _read_marks(self) -> dict[str, cloud_marks.Sealed]:
        """Every point's newest marks in the bucket, each sealed and bound to its name."""
        found: dict[str, cloud_marks.Sealed] = {}
        for name, version in self._mark_records():
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
        """Every point deleted from the bucket, from one listing of ``removed/``."""
        found = []
        for name in self.backend.list("removed"):
            parts = name.split("/")
            fields = parts[-1].split("_") if len(parts) == 3 else []
            if len(fields) != 3 or not _POINT_ID.match(fields[0]) or not fields[1].isdigit():
                continue
            point_id, micros, mac = fields[0], int(fields[1]), fields[2]
            want = _tombstone_mac(self.sealer, self.repository_id, parts[1], point_id, micros)
            if hmac.compare_digest(want.encode(), mac.encode("utf-8", "surrogatepass")):
                found.append(Removed(point_id, parts[1], micros / 1_000_000))
        return found

    def sync(self, repo: Repository) -> None:
        """Bring the cache catalog to the bucket's set of points.

        Points new to the cache enter by the delete rule reversed, in creation order, so
        every reference count ends as if this node had seen every change itself. Points gone
        from the bucket were deleted by another node, which may already have removed the
        nodes of their block maps: the counts are then recounted from the remaining points
        (`verify.expected_refs`), and chunks no longer counted are queued for an exclusive
        holder to unlink (the deleting node may have died before it could).
        """
        with repo.catalog.transaction():
            self._apply(repo)

    def _apply(self, repo: Repository) -> None:
        """The sync itself; the listing is taken inside the catalog's write lock, so a
        point another local process is publishing is either seen or added by it later.
        Nothing is written to the bucket: a record hidden behind a delete marker while
        still locked is read past the marker (`S3Backend.behind_marker`)."""
        remote: dict[str, str] = {}
        hidden = [n for n in self._hidden(("points",)) if self.backend.exists(n)]  # locked
        for name in [*self.backend.list("points"), *hidden]:
            point_id = self._point_id_of(name)
            if point_id in remote and remote[point_id] != name:
                raise Corruption(f"objects {remote[point_id]} and {name} in {self.where} "
                                 "claim the same point: one was planted; remove it")
            remote[point_id] = name
        local = {p.id: p for p in repo.catalog.points()}
        gone = {i for i in local.keys() - remote.keys()
                if not self.backend.exists(point_object(local[i]))}
        if gone:
            repo.catalog.forget_points(gone)
            repo.catalog.recount(expected_refs(repo, repo.nodes))
        arrivals = []
        unread = remote.keys() - (local.keys() & cloud_marks.known(repo))
        for point_id in unread:
            try:
                raw = self.backend.get(remote[point_id])
            except KeyError:
                continue  # deleted since the listing (or hidden, and its lock passed)
            point, until = self._open_record(remote[point_id], raw)
            cloud_marks.note(repo, point.id, record_until=until)
            if point_id not in local:
                arrivals.append(point)
        for point in sorted(arrivals, key=lambda p: p.created):
            self.learn(repo, point)
        if arrivals or gone:
            self._learn_sizes(repo)
        merged = cloud_marks.merge(repo, self._read_marks(), self.where)
        marks.replace_marks(repo, merged)
        cloud_machines.sync(self, repo)

    def _learn_sizes(self, repo: Repository) -> None:
        """The stored size of each chunk this cache learnt with a point another node sent,
        from the pack indexes (`cloud_packs`), else, for legacy chunk objects, from a
        listing of the bucket (no chunk is read): only when points arrived, listing just
        the folders of those chunks (``chunks/abc/``), or ``chunks/`` whole when that takes
        fewer requests (a thousand objects each). Sizes before compression stay unknown:
        only the node that sent a chunk knows them."""
        unsized = repo.catalog.unsized_chunks()
        if unsized and self.packs is not None:
            self.packs.refresh()
            packed = self.packs.locations(unsized)
            repo.catalog.learn_stored({d: length for d, (_p, _o, length) in packed.items()})
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
        """Add one published point to the cache catalog with its runs."""
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
        node = self.repo.chunks.get(digest)
        tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(node)
        tmp.rename(path)
        return node


def _versions(backend: Bucket) -> Retention | None:
    """In a versioned bucket (every Object Lock bucket) a DELETE only hides an object behind
    a marker and frees nothing: there cairn's deletes also delete the object's versions
    whose lock has passed (`Retention.forget`), so prune frees what no locked point needs;
    and what others hid while locked comes back (`Cloud.revive`)."""
    from cairn.store.backends.s3 import S3Backend

    if not isinstance(backend, S3Backend):
        return None
    from cairn.store.backends.s3_lock import Retention

    versions = Retention(backend)
    if versions.versioned():
        backend.forget = versions.forget
        backend.behind_marker = versions.behind_marker
        return versions
    versions.close()
    return None


def _repository(url: str, backend: Bucket, config: RepositoryConfig,
                key: RepoKey) -> Repository:
    """Open the repository whose config was just authenticated with ``key``."""
    assert REPOSITORY_ID.match(config.id)
    check_block_size(config.block_size)
    folder = cache_root() / config.id
    private_folder(folder)
    cloud = Cloud(backend, url, Sealer(key.secret), config.id)
    cloud.versions = _versions(backend)
    cloud.packs = CloudPacks(backend, folder, cloud.sealer, config.id, url)
    cloud.packs.store = cloud.store
    cloud.packs.hidden = lambda: cloud._hidden(("index",))
    repo = Repository(url, folder, config, cloud.packs,
                      key.secret if key.encrypts else None, cloud)
    repo.chunks.locate = cloud.packs.describe
    cloud.cache = repo
    backend.max_object = repo.chunks.max_stored
    repo.nodes = NodeCache(NodeFiles(folder / "nodes", repo))
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
