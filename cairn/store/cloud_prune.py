"""Freeing space in a cloud repository without a lock on its writers: two-step deletion.

Chunks live in packs (`cloud_packs`), and a pack holds chunks of many points, so space comes
back by whole packs. Replications take no lock, so a prune cannot know what a writer is about
to publish; it deletes in two steps (Duplicacy's "fossil collection", adapted), with ``G`` the
grace period (`cloudlock.lifetime`, 30 min by default). Ages of bucket objects are the
server's LastModified against the server's time (`server_now`), never a host clock.

1. A full listing of ``points/`` (never an incremental one) agrees with the synced cache,
   every index is read, and the live set is every chunk a published point reaches. A live
   chunk's canonical copy is in the lowest pack id that is not condemned; other copies are
   dead bytes.
2. A pack younger than ``G`` is never condemned: its writer may be about to publish the
   point that needs it. A pack object with no index, older than ``G``, is an orphan of a
   dead writer and is condemned like a dead pack.
3. A pack older than ``G`` with no canonical copy gets a notice ``condemned/<id>``. One
   whose dead bytes pass `DEAD_SHARE` of its size has its canonical chunks written into new
   packs first (`CloudPacks.write_pack`, same digests: a chunk's identity never changes),
   then is condemned.
4. A later prune deletes a condemned pack when its notice is older than ``G`` and this
   prune's listing (taken after it read the server's time) shows no published point needing
   a chunk whose only copies are condemned; where one does, a writer reused it and the
   condemnation is lifted (the notice deleted). A pack goes first, then its index, then
   the notice: a prune that dies midway leaves a notice that the next one completes.
5. Writers count a chunk whose every copy is condemned as absent (`only_condemned`: sent
   again), and publish only if less than ``G/2`` (monotonic) passed since they read the
   notices; otherwise they plan again (`replicate`). A chunk no point their cache counts
   holds, found in a pack by their index, counts only if that pack is still there after
   the notices were listed (`still_there`): a pack deleted with its notice leaves no
   notice to warn them, and their index still names it.
6. On an Object Lock bucket, a pack hidden behind a delete marker (an older prune's DELETE
   of a locked pack, or anyone's: `cloud_pack_locks.hidden_packs`) is a pack without a
   notice: a writer may have taken its chunks (an index is read past its marker while
   locked). One that holds the only copy of a live chunk is brought back (its markers
   removed) and its notice, if any, lifted; any other gets a notice, whatever its age (no
   writer is about to publish into a pack that is already hidden, and a writer that relied
   on it before the notice is protected as in 4: its point is listed before the deletion,
   which then brings the pack back instead), and goes by 4, every version, once its lock
   has passed (`cloud_pack_locks`). What a hidden pack holds is read from its index even
   where this node never read it (`cloud_pack_locks.read_hidden`: the newest version, past
   the marker); a hidden pack whose index cannot be read or opened is kept, whatever its
   notice says, and named in the report: nothing proves it dead.

Why nothing a point needs is deleted: a writer that planned at ``t_c`` and publishes at
``t_p < t_c + G/2`` relied only on packs without a notice at ``t_c``. A notice written at
``t_x > t_c`` lets its pack go at ``t_d >= t_x + G > t_p`` only after a listing taken after
``t_x + G``, which already shows the writer's point, so the condemnation is lifted instead.
A pack that a point in flight wrote is younger than ``G`` and never condemned.

Failures never delete on a guess: a listing that fails raises before anything is deleted, a
pack that an index names but that is missing or shorter than its index says stops the prune
(naming both objects) when a live chunk is in it, and no local data is touched by any of it.
Only one prune runs at a time (an exclusive `RemoteLock`; replications never take it).
A prune also aborts the multipart uploads (packs) initiated more than ``G`` ago
(`s3_uploads.abort_stale`): a killed writer's parts, never visible as a pack.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cairn import logs
from cairn.errors import CairnError, Corruption, S3AccessDenied, UsageError
from cairn.store.chunks import chunk_name
from cairn.store.cloud_live import live
from cairn.store.cloud_pack_locks import PackLocks, hidden_packs, read_hidden
from cairn.store.cloud_packs import CloudPacks, index_object, pack_bytes, pack_object
from cairn.store.cloudlock import LOCK_WAIT, Bucket, RemoteLock, lifetime
from cairn.store.parallel import bounded_map
from cairn.store.phases import Advance, Progress, phase

if TYPE_CHECKING:
    from cairn.store.cloud import Cloud
    from cairn.store.cloud_packs import Location
    from cairn.store.repository import Repository

CONDEMNED = "condemned"
CLOCK = "prune.time"
"""an object the prune writes to read the server's time from its LastModified"""


def dead_share() -> float:
    """The share of a pack's bytes that must be dead before its live chunks are moved out
    (``CAIRN_CLOUD_REPACK_SHARE``, 0.3 by default): rewriting costs a GET and a PUT of the
    live bytes, so a pack that is mostly live waits until more of it dies."""
    return float(os.environ.get("CAIRN_CLOUD_REPACK_SHARE") or 0.3)


@dataclass
class PruneReport:
    """What one prune did (or, on a dry run, would do)."""

    dry_run: bool = False
    points: int = 0
    packs: int = 0
    condemned: list[str] = field(default_factory=list)
    repacked: list[str] = field(default_factory=list)
    new_packs: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    lifted: list[str] = field(default_factory=list)
    bytes_freed: int = 0
    bytes_rewritten: int = 0
    held: int = 0
    """condemned packs due for deletion that Object Lock still keeps (`cloud_pack_locks`)"""
    held_until: float | None = None
    unreadable: list[str] = field(default_factory=list)
    """hidden packs kept because their index could not be read or opened (`read_hidden`)"""
    seconds: float = 0.0

    def json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "points": self.points, "packs": self.packs,
                "packs_condemned": self.condemned, "packs_repacked": self.repacked,
                "packs_written": self.new_packs, "packs_deleted": self.deleted,
                "condemnations_lifted": self.lifted, "bytes_freed": self.bytes_freed,
                "bytes_rewritten": self.bytes_rewritten, "packs_held": self.held,
                "packs_held_until": self.held_until,
                "packs_kept_unreadable": self.unreadable, "seconds": self.seconds}


def condemned(bucket: Bucket) -> dict[str, float]:
    """Every condemned pack id with the server time of its notice (one full listing)."""
    return {name.rpartition("/")[2]: stamp for name, stamp in bucket.stamps(CONDEMNED)}


def only_condemned(packs: CloudPacks, digests: Iterable[bytes],
                   notices: Iterable[str]) -> set[bytes]:
    """Those of ``digests`` held in packs and only in condemned ones: a writer sends them
    again (the prune may delete those packs). A chunk no pack holds (a legacy object, or
    not there at all) is left to the caller."""
    doomed = set(notices)
    wanted = {d for d, (pack, _o, _n) in packs.locations(digests).items() if pack in doomed}
    if not wanted:
        return set()  # the copy each is read from is not condemned: the common case
    copies = _copies(packs, wanted)
    return {d for d, where in copies.items() if all(c[0] in doomed for c in where)}


def still_there(cloud: Cloud, packs: CloudPacks, digests: Iterable[bytes]) -> set[bytes]:
    """Those of ``digests`` whose copy the index reads is in a pack the bucket still holds,
    checked after the writer listed the notices: a HEAD per pack (a chunk whose pack is gone
    has its next copy checked, and a pack found gone is forgotten). A node's index keeps
    every pack it ever read, and another node's prune deletes a pack without telling it;
    once its notice is gone too, only the pack's absence says so. A pack there after the
    notices were listed, none naming it, was not being deleted then (a prune deletes a pack
    before its notice), so rule 3 covers it from then on."""
    left = set(digests)
    there: dict[str, bool] = {}
    while True:
        where = packs.locations(left)
        left &= where.keys()  # no copy known any more: absent
        unchecked = sorted({pack for pack, _o, _n in where.values()} - there.keys())
        if not unchecked:
            return {d for d in left if there[where[d][0]]}
        found = bounded_map(lambda p: cloud.backend.exists(pack_object(p)), unchecked, 8)
        for pack, present in zip(unchecked, found, strict=True):
            there[pack] = present
            if not present:
                packs.forget_pack(pack)


def _copies(packs: CloudPacks, digests: set[bytes]) -> dict[bytes, list[Location]]:
    """Every copy the index knows of each of ``digests`` (a chunk in no pack is absent);
    the copy `CloudPacks.locations` reads (a repair's, else the oldest) comes first."""
    found: dict[bytes, list[Location]] = {}
    for pack in packs.pack_ids():
        info = packs.pack_info(pack)
        for digest, offset, length in info.chunks if info is not None else []:
            if digest in digests:
                found.setdefault(digest, []).append((pack, offset, length))
    for digest, read in packs.locations(list(found)).items():
        found[digest].sort(key=lambda c: (c != read, c[0]))
    return found


def server_now(cloud: Cloud) -> float:
    """The server's time now: the LastModified of an object just written (in a versioned
    bucket its older version is deleted: one would be left behind at every prune)."""
    cloud.backend.put(CLOCK, b"")
    now = cloud.backend.stamp(CLOCK)
    if cloud.versions is not None:
        cloud.versions.keep_latest(CLOCK)
    return now


def listed(what: str, where: str, listing: Iterator[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """A whole listing, or one line saying which prefix could not be listed."""
    try:
        return list(listing)
    except S3AccessDenied as exc:
        raise CairnError(
            f"cannot list {what} in {where}: {exc}; a prune needs the rights to list, read, "
            "write and delete objects; nothing was deleted") from None


@dataclass
class _Bucket:
    """One prune's view of the bucket: full listings taken after ``now``."""

    now: float
    points: set[str]
    packs: dict[str, tuple[float, int]]
    """pack id -> (server stamp, size) of every ``packs/`` object"""
    indexes: dict[str, float]
    """pack id -> server stamp of every ``index/`` object"""
    notices: dict[str, float]
    hidden: set[str] = field(default_factory=set)
    """packs a delete marker hides over a version still there (Object Lock buckets only:
    `cloud_pack_locks.hidden_packs`), listed in none of the above"""


def _pack_id(name: str) -> str:
    return name.rpartition("/")[2]


def _survey(cloud: Cloud) -> _Bucket:
    """The listings, in the order writers write backwards (a writer puts a pack, then its
    index, then the point): a point listed has its index listed, and an index listed has
    its pack listed, unless either was lost (or deleted by a prune, which holds the lock)."""
    bucket, where = cloud.backend, cloud.where
    now = server_now(cloud)
    notices = {_pack_id(name): stamp
               for name, stamp in listed("condemned/", where, bucket.stamps(CONDEMNED))}
    points = {cloud._point_id_of(name)
              for name, _ in listed("points/", where, bucket.stamps("points"))}
    indexes = {_pack_id(name): stamp
               for name, stamp in listed("index/", where, bucket.stamps("index"))}
    stamps = dict(listed("packs/", where, bucket.stamps("packs")))
    sizes = dict(listed("packs/", where, bucket.sizes("packs")))
    packs = {_pack_id(name): (stamp, sizes[name]) for name, stamp in stamps.items()
             if name in sizes}
    from cairn.store.cloud_held import retention_of  # it imports this module

    retention = retention_of(cloud)
    hidden = hidden_packs(retention) - packs.keys() if retention is not None else set()
    return _Bucket(now, points, packs, indexes, notices, hidden)


def _live(repo: Repository, cloud: Cloud, listed: set[str], progress: Progress | None
          ) -> set[bytes]:
    """Every chunk a published point reaches, once the cache knows every listed point: the
    volumes this cache does not count (other appliances') by the counts the prunes keep
    (`cloud_live`: their block maps are walked once per node, not at every sync or prune)."""
    if not listed <= _known(repo) and not cloud.sync(repo) and not listed <= _known(repo):
        with repo.catalog.transaction():  # the feed missed one: list every record, as a prune must
            cloud._full(repo)
    unknown = listed - _known(repo)
    if unknown:
        raise CairnError(f"the points listed in {cloud.where} "
                         f"({len(unknown)} unknown to this node's cache) could not be "
                         "read: nothing was pruned; run the prune again")
    return live(repo, progress)


def _known(repo: Repository) -> set[str]:
    return {row[0] for row in repo.catalog.db.execute("SELECT id FROM points")}


@dataclass
class _Plan:
    """Per pack, the bytes of the canonical copies it holds, and which chunks they are."""

    live_bytes: dict[str, int] = field(default_factory=dict)
    canonical: dict[str, list[bytes]] = field(default_factory=dict)
    lift: set[str] = field(default_factory=set)
    """condemned packs a point needs, and hidden ones to bring back"""
    missing: dict[str, bytes] = field(default_factory=dict)
    """a pack the live set needs that is missing or short -> one live chunk in it"""


def _canonical(packs: CloudPacks, live: set[bytes], view: _Bucket) -> _Plan:
    """Where each live chunk's one counted copy is: among the copies in packs that are
    there whole and not condemned, the one readers read, else the oldest; a chunk whose
    every such copy is condemned lifts the condemnation of that copy's pack, and one with
    no whole copy at all is `missing`, unless a hidden pack holds one: that pack is lifted
    (brought back). (Chunks in no pack, legacy objects, are `convert`'s.)"""
    plan = _Plan()
    for digest, copies in _copies(packs, live).items():
        known = [c for c in copies if c[0] in view.indexes or c[0] in view.hidden]
        whole = [c for c in known if c[0] in view.packs and view.packs[c[0]][1] >= c[1] + c[2]]
        if not known:
            continue  # every copy's index landed after the listing: young, nothing to decide
        whole = whole or [c for c in known if c[0] in view.hidden]
        if not whole:
            plan.missing.setdefault(copies[0][0], digest)
            continue
        free = [c for c in whole if c[0] not in view.notices and c[0] not in view.hidden]
        best = (free or whole)[0]
        if not free:
            plan.lift.add(best[0])
        pack, _offset, length = best
        plan.live_bytes[pack] = plan.live_bytes.get(pack, 0) + length
        plan.canonical.setdefault(pack, []).append(digest)
    return plan


def _refuse_missing(plan: _Plan, where: str) -> None:
    """A live chunk in a pack that is gone or cut short: stop before deleting anything."""
    if not plan.missing:
        return
    pack, digest = sorted(plan.missing.items())[0]
    raise Corruption(f"{pack_object(pack)} in {where} (named by index/{pack}) is missing or "
                     f"shorter than its index says, and chunk {digest.hex()} that a point "
                     f"needs is in it ({len(plan.missing)} such pack(s)): nothing was "
                     "pruned; run `cairn verify --repair` from a node that holds the chunks")


def prune(repo: Repository, dry_run: bool = False, wait: float = LOCK_WAIT,
          progress: Progress | None = None) -> PruneReport:
    """One prune of a cloud repository (see the module docstring), alone among prunes:
    `Locked` when another holds the prune lock longer than ``wait`` seconds. ``progress``
    is told each phase, and how many volumes, packs ... each has done."""
    from cairn.store.cloud import Cloud

    cloud = repo.remote
    if not isinstance(cloud, Cloud):
        raise UsageError(f"{repo.location} is not a cloud repository: give s3://BUCKET/PREFIX")
    started = time.monotonic()
    with _prune_lock(cloud, wait):
        cloud.sync(repo)
        report = _prune(repo, cloud, packs_of(repo), dry_run, progress)
    report.seconds = round(time.monotonic() - started, 3)
    logs.event("cloud.prune", where=cloud.where, **{k: v for k, v in report.json().items()
                                                    if not isinstance(v, list)})
    return report


@contextmanager
def _prune_lock(cloud: Cloud, wait: float) -> Iterator[None]:
    """One prune at a time (two would condemn and repack the same packs twice)."""
    lock = RemoteLock(cloud.backend, True, cloud.where).acquire(wait)
    try:
        yield
    finally:
        lock.release()


def packs_of(repo: Repository) -> CloudPacks:
    backend = repo.chunks.backend
    assert isinstance(backend, CloudPacks)
    return backend


def _prune(repo: Repository, cloud: Cloud, packs: CloudPacks, dry_run: bool,
           progress: Progress | None) -> PruneReport:
    with phase(progress, 0, "listing points, indexes and packs"):
        view = _survey(cloud)
        if not dry_run:
            _abort_stale_uploads(cloud, view.now)
    live = _live(repo, cloud, view.points, progress)
    with phase(progress, 0, "reading pack indexes"):
        packs.refresh(full=True)
        unreadable = _read_hidden(cloud, packs, view)
    report = PruneReport(dry_run=dry_run, points=len(view.points), packs=len(view.packs),
                         unreadable=sorted(unreadable))
    if not view.points:
        logs.event("cloud.prune_skipped", where=cloud.where, why="no points listed")
        return report
    plan = _canonical(packs, live, view)
    _refuse_missing(plan, cloud.where)
    report.lifted = sorted(plan.lift)
    for pack in report.lifted:
        if not dry_run:
            _lift(cloud, pack, view)
        view.notices.pop(pack, None)
        view.hidden.discard(pack)
    grace = lifetime()
    due = [p for p, stamp in view.notices.items()
           if view.now - stamp > grace and p not in unreadable]
    with phase(progress, len(due), "packs condemned a grace ago, deleted") as advance:
        _delete(cloud, packs, due, view, report, advance)
    doomed, sparse = _doomed(view, plan, grace, view.indexes.keys() ^ set(packs.pack_ids()))
    doomed = sorted({*doomed, *view.hidden} - view.notices.keys())  # hidden: none lifted
    if not dry_run:
        with phase(progress, len(sparse), "sparse packs rewritten") as advance:
            report.new_packs = _repack(repo, packs, plan, sparse, report, advance)
        with phase(progress, len(doomed) + len(sparse), "packs condemned") as advance:
            for pack in [*doomed, *sparse]:
                cloud.backend.put(f"{CONDEMNED}/{pack}", b"")
                advance(1)
    report.repacked = sparse
    report.condemned = sorted([*doomed, *sparse])
    return report


def _read_hidden(cloud: Cloud, packs: CloudPacks, view: _Bucket) -> set[str]:
    """Learn the indexes of hidden packs this node never read; those that cannot be read
    leave ``view.hidden`` (never condemned) and are returned (never deleted)."""
    unreadable = read_hidden(cloud.versions if view.hidden else None, packs, view.hidden)
    for pack, why in sorted(unreadable.items()):
        logs.event("cloud.hidden_pack_kept", level=logging.WARNING, where=cloud.where,
                   pack=pack_object(pack), why=why)
    view.hidden -= unreadable.keys()
    return set(unreadable)


def _lift(cloud: Cloud, pack: str, view: _Bucket) -> None:
    """A point needs ``pack``: a hidden one is brought back (its delete markers removed,
    pack before index), then its notice goes, so writers take its chunks again."""
    if pack in view.hidden and cloud.versions is not None:
        for name in (pack_object(pack), index_object(pack)):
            if cloud.versions.restore(name):
                logs.event("cloud.locked_object_restored", object=name, where=cloud.where)
    if pack in view.notices:
        _delete_object(cloud, f"{CONDEMNED}/{pack}")


def _abort_stale_uploads(cloud: Cloud, now: float) -> None:
    """Abort the multipart uploads (packs) of writers killed more than the grace window
    ago: their parts are invisible but kept, and billed, until aborted (`s3_uploads`).
    Housekeeping only: a key without the right to list or abort them (an IAM policy
    without s3:ListBucketMultipartUploads) is warned about, and the prune goes on."""
    from cairn.store.backends.s3 import S3Backend
    from cairn.store.backends.s3_uploads import abort_stale

    if isinstance(cloud.backend, S3Backend):
        try:
            abort_stale(cloud.backend, lifetime(), now)
        except S3AccessDenied as exc:
            logs.event("cloud.uploads_not_aborted", level=logging.WARNING, where=cloud.where,
                       why=str(exc))


def _doomed(view: _Bucket, plan: _Plan, grace: float, unread: set[str]
            ) -> tuple[list[str], list[str]]:
    """Packs (or lone indexes) older than ``grace`` and not yet condemned: those with no
    canonical copy (orphans without an index among them), and those past `dead_share`.
    A pack whose index was listed but not read here, or read but landed after the listing
    (``unread``), is left alone: what it holds is not known at the listing's time."""
    def old(stamps: dict[str, float]) -> set[str]:
        return {p for p, stamp in stamps.items()
                if view.now - stamp > grace and p not in view.notices and p not in unread}

    aged = old({p: stamp for p, (stamp, _size) in view.packs.items()})
    lone = old(view.indexes) - view.packs.keys()  # a pack that never landed or was lost
    doomed = sorted(p for p in aged | lone if plan.live_bytes.get(p, 0) == 0)
    sparse = sorted(p for p in aged if p not in doomed
                    and view.packs[p][1] - plan.live_bytes[p] > dead_share() * view.packs[p][1])
    return doomed, sparse


def _delete(cloud: Cloud, packs: CloudPacks, pack_ids: list[str], view: _Bucket,
            report: PruneReport, advance: Advance) -> None:
    """Pack, then index, then notice: each step leaves what the next prune completes. A
    pack Object Lock still keeps is left whole until a later prune (`cloud_pack_locks`)."""
    locks = PackLocks.take(cloud, view.now, report.dry_run)
    for pack in sorted(pack_ids):
        advance(1)
        if locks.keeps(pack):
            continue
        info = packs.pack_info(pack) if pack not in view.packs else None
        report.bytes_freed += view.packs.get(pack, (0.0, info.size if info else 0))[1]
        if not report.dry_run:
            if pack in view.packs or pack in view.hidden:
                _delete_object(cloud, pack_object(pack))
            if pack in view.indexes or pack in view.hidden:
                _delete_object(cloud, index_object(pack))
            _delete_object(cloud, f"{CONDEMNED}/{pack}")
            packs.forget_pack(pack)
        report.deleted.append(pack)
    locks.close(view.notices.keys() - set(report.deleted))
    report.held, report.held_until = len(locks.waiting), locks.until


def _delete_object(cloud: Cloud, name: str) -> None:
    try:
        cloud.backend.delete(name)
    except S3AccessDenied as exc:
        raise CairnError(f"cannot delete {name} in {cloud.where}: {exc}; a prune needs the "
                         "right to delete objects (what it deleted before stays deleted, "
                         "which no point needed)") from None


def _repack(repo: Repository, packs: CloudPacks, plan: _Plan, sparse: list[str],
            report: PruneReport, advance: Advance) -> list[str]:
    """Write the canonical chunks of ``sparse`` packs into new packs, checked as read."""
    written: list[str] = []
    batch: list[tuple[bytes, bytes]] = []
    plain: dict[bytes, int] = {}  # sizes before compression, for the new indexes
    size = 0
    limit = pack_bytes()
    for pack in sorted(sparse):
        for digest in plan.canonical.get(pack, []):
            try:
                stored = packs.get(chunk_name(digest))
                plain[digest] = len(repo.chunks.decode(digest, stored))
            except (KeyError, Corruption) as exc:
                raise Corruption(f"chunk {digest.hex()} in {pack_object(pack)} could not be "
                                 f"read back to repack it ({exc}): nothing was deleted; run "
                                 "`cairn verify` on the repository") from None
            batch.append((digest, stored))
            size += len(stored)
            report.bytes_rewritten += len(stored)
            if size >= limit:
                written.append(packs.write_pack(batch, plain))
                batch, size = [], 0
        advance(1)
    if batch:
        written.append(packs.write_pack(batch, plain))
    return written
