"""Send the points a cloud repository lacks, and only the chunks it does not hold.

The points sent are those `selection.choose` picks: never one the cloud holds or held (its
retention removed it), and with ``send`` only the first of each hour or day. For each, the
walk is a tree diff against the cloud's point just before it in the same volume: shared
subtrees are skipped, so the work and the traffic follow what changed. Each chunk that the
cloud's catalog does not know is read from the local store, checked against its hash (a
damaged local chunk is never sent on), and PUT as stored: both repositories use the same
key (or none), so chunks travel unchanged. They are read in the local store's order (pack
by pack, neighbours in one read: `ChunkStore.get_many_stored`), not one by one in hash
order: the first replication read its packs at random, 64 KiB at a time. Only then is the
point published in the bucket: a point appears there only once complete. A machine point is
published (`cloud_machines`) once the bucket holds every disk's point of it, so it too
appears only whole. A point record's ``bytes_stored`` is what the point added to the bucket
(the stored size of the chunks the cloud lacked), not what its local backup stored: the two
differ when points were skipped (``send``), deleted before they were sent, or when the
cloud already held chunks from another volume or appliance.

Replication takes no lock on the cloud: any number of appliances replicate into one
repository at once, beside deletes and a prune (the argument: `cairn.store.cloud`). Before
each point it syncs the cache (incrementally: one request when nothing changed) and plans
from it; a plan older than half the grace period (`cloudlock.lifetime`, on the monotonic
clock) is made again before publishing, since a prune may since have condemned what it
relied on. Chunks travel in packs (`cloud_packs`); a run that dies leaves the packs it
uploaded with their indexes, and the next run (like any other appliance) learns them from
the indexes and does not send their chunks again.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from cairn.errors import MissingChunk, UsageError
from cairn.meter import Meter
from cairn.replication.selection import Known, check_send, choose
from cairn.store import cloud_prune, marks
from cairn.store.blockmap import NodeCache, diff
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO, chunk_name
from cairn.store.cloud import Cloud
from cairn.store.cloud_machines import publish_complete
from cairn.store.cloudlock import lifetime
from cairn.store.machine_points import MachinePoints
from cairn.store.repository import Repository


@dataclass
class Report:
    points: list[str] = field(default_factory=list)
    chunks_sent: int = 0
    bytes_sent: int = 0
    chunks_already_there: int = 0
    seconds: float = 0.0
    not_sent_removed: int = 0
    left_for_later: int = 0
    locked_until: float | None = None
    """when immutable: the Object Lock date of the last point sent"""
    lock_requests: int = 0
    """requests made only to extend Object Lock retention (`immutable`)"""
    machine_points: list[str] = field(default_factory=list)
    """machine points published, once the cloud held all their disks' points"""


_RATE = re.compile(r"^(\d+(?:\.\d+)?)([KMG]?)$", re.IGNORECASE)


def parse_rate(text: str | None) -> int | None:
    """``50M`` = 50 MB/s (decimal, as network rates are written)."""
    if text is None:
        return None
    m = _RATE.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--bandwidth {text!r}: give bytes per second like 800K, 50M or 1G")
    return int(float(m.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[
        m.group(2).upper()])


class Throttle:
    """Caps the rate of bytes sent across threads (``--bandwidth``)."""

    def __init__(self, bytes_per_second: int | None) -> None:
        self.rate = bytes_per_second
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + n / self.rate
        if start > now:
            time.sleep(start - now)


def _check_compatible(local: Repository, cloud: Repository) -> Cloud:
    if not isinstance(cloud.remote, Cloud):
        raise UsageError(f"{cloud.location} is not a cloud repository: give s3://BUCKET/PREFIX")
    if local.config.key_id != cloud.config.key_id:
        raise UsageError(f"{cloud.location} and {local.location} use different keys: create "
                         "the cloud repository with --key-file set to the local repository's "
                         "key (or neither encrypted)")
    if local.block_size != cloud.block_size:
        raise UsageError(f"{cloud.location} cuts {cloud.block_size}-byte blocks and "
                         f"{local.location} {local.block_size}: init the cloud repository "
                         f"with --block-size {local.block_size}")
    return cloud.remote


def _wanted(local: Repository, cloud: Repository, remote: Cloud,
            volumes: Sequence[str] | None, send: str, report: Report) -> list[RecoveryPoint]:
    """What to send, from the cloud's points and tombstones (read under the lock); points
    deleted there and still held count as removed (they are not sent again either)."""
    removed = remote.removed()
    points = [p for p in marks.live_points(local) if volumes is None or p.volume in volumes]
    gone = {r.id for r in removed} | {p.id for p, _m in marks.held_points(cloud)}
    report.not_sent_removed = sum(p.id in gone for p in points)
    known = [Known(p.id, p.volume, p.created) for p in cloud.catalog.points()]
    return choose(points, known + [Known(r.id, r.volume, r.created) for r in removed], send,
                  _moments(local, cloud) if send != "all" else None)


def _moments(*repos: Repository) -> dict[str, float]:
    """Each disk's point of a machine point -> the machine point's time (`choose` places
    it in that period, so all disks of one backup are sent, or none)."""
    return {m.point.id: mp.created for repo in repos
            for mp in MachinePoints(repo.catalog).list() for m in mp.members}


@dataclass(frozen=True)
class Pace:
    """How fast and until when a replication may send: ``bandwidth`` in bytes per second,
    ``until`` a time after which no new point starts (an offsite window closing)."""

    bandwidth: int | None = None
    until: float | None = None


def replicate(local: Repository, cloud: Repository, volume: str | Sequence[str] | None = None,
              pace: Pace = Pace(),
              progress: Meter | None = None, send: str = "all") -> Report:
    """Send what `selection.choose` picks of ``volume`` (one, several: a machine's, or
    all); past ``pace.until`` start no point: the rest waits for the next run
    (``left_for_later``)."""
    until = pace.until
    remote = _check_compatible(local, cloud)
    send = check_send(send)
    started = time.monotonic()
    report = Report()
    throttle = Throttle(pace.bandwidth)
    volumes = [volume] if isinstance(volume, str) else volume
    for name in volumes or ():
        local.volume(name)  # an unknown volume is refused

    def fetch(digest: bytes) -> bytes:
        try:
            return local.chunks.get(digest)
        except MissingChunk:
            return cloud.chunks.get(digest)

    nodes = NodeCache(fetch)

    def put(digest: bytes, stored: bytes, size: int) -> tuple[bytes, int, int]:
        throttle.take(len(stored))
        remote.put_chunk(chunk_name(digest), stored, size)
        return digest, size, len(stored)

    def put_many(digests: set[bytes]) -> Iterator[tuple[bytes, int, int]]:
        return local.chunks.get_many_stored(list(digests), put)

    remote.prepare(cloud)
    remote.nearby = local.chunks  # its own new block maps are not read back from the bucket
    wanted = _wanted(local, cloud, remote, volumes, send, report)
    for n, point in enumerate(wanted):
        if until is not None and time.time() >= until:
            report.left_for_later = len(wanted) - n
            break
        while True:
            planned = time.monotonic()
            remote.sync(cloud)  # what the plan relies on is what the bucket holds now
            if cloud.catalog.point(point.id) is not None:
                break
            placed = _placed(cloud, point)
            written = _send(local, remote, _needed(nodes, local, cloud, point, placed),
                            Sending(put_many, report, progress))
            if time.monotonic() - planned < lifetime() / 2:
                _publish(local, cloud, replace(placed, bytes_stored=sum(
                    stored for _size, stored in written.values())), written, report)
                break
            # Too long since the plan: a prune may since have condemned what it relied
            # on. Plan again (what was sent is in packs the index knows: not sent twice).
    report.machine_points = publish_complete(local, cloud)
    if remote.locker is not None:
        report.lock_requests = remote.locker.retention.extensions
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _publish(local: Repository, cloud: Repository, placed: RecoveryPoint,
             written: dict[bytes, tuple[int, int]], report: Report) -> None:
    """Publish a point whose chunks are all in the cloud, then add it to the cloud's cache;
    an immutable one is also locked there (`marks`) until its Object Lock date, so the
    cloud's retention and deletes keep it until then as S3 would. A point detection flagged
    here is flagged there too: the cloud's retention keeps it (and the evidence) as well."""
    assert isinstance(cloud.remote, Cloud)
    locked_until = cloud.remote.publish(placed)
    committed = Cloud.insert(cloud, placed, written)
    if locked_until is not None:
        if (marks.marks_of(cloud, committed.id).locked_until or 0) < locked_until:
            marks.lock(cloud, [committed], locked_until)
        report.locked_until = locked_until
    flags = marks.marks_of(local, placed.id).flags
    if flags:
        marks.flag(cloud, committed, flags)
    report.points.append(placed.id)


def _placed(cloud: Repository, point: RecoveryPoint) -> RecoveryPoint:
    """``point`` as the cloud's catalog will hold it: its volume there, ordered by time."""
    cloud_volume = cloud.catalog.ensure_volume(point.volume)
    return RecoveryPoint(**{**point.__dict__, "volume_id": cloud_volume.id,
                            "seq": int(point.created * 1_000_000)})


def _needed(nodes: NodeCache, local: Repository, cloud: Repository, point: RecoveryPoint,
            placed: RecoveryPoint) -> set[bytes]:
    """The chunks ``point`` reads that its predecessor in the cloud does not."""
    before, _after = cloud.catalog.neighbours(placed)
    return {h for _slot, _old, h in diff(nodes, cloud.tree(before) if before else None,
                                         local.tree(point))
            if h is not None and h != ZERO}


@dataclass
class Sending:
    """How chunks go out: read, checked and uploaded (``put_many``), and what is reported."""

    put_many: Callable[[set[bytes]], Iterator[tuple[bytes, int, int]]]
    report: Report
    progress: Meter | None


def _send(local: Repository, remote: Cloud, needed: set[bytes], how: Sending
          ) -> dict[bytes, tuple[int, int]]:
    """Send what of ``needed`` the cloud lacks; the sizes of every chunk the point adds."""
    report, progress = how.report, how.progress
    to_send, written = _plan(local, remote, needed, report, progress)
    for digest, size, stored in how.put_many(to_send):
        written[digest] = (size, stored)
        report.chunks_sent += 1
        report.bytes_sent += stored
        if progress:
            progress(stored)
    return written


def _plan(local: Repository, remote: Cloud, needed: set[bytes], report: Report,
          progress: Meter | None) -> tuple[set[bytes], dict[bytes, tuple[int, int]]]:
    """Of the chunks a point needs, those to send, and the sizes of those the bucket's
    packs hold already though no point this cache knows needs them (a run that died, or
    another appliance sending the same blocks): not sent again. Both are what the point
    adds to the cloud: every chunk its catalog lacks. A chunk whose only copies a prune
    condemned counts as absent and is sent again (`cloud`'s rule 3): that pack may be
    deleted before this point is published."""
    assert remote.cache is not None and remote.packs is not None
    new = needed - remote.cache.catalog.held_chunks(list(needed))
    if new:
        remote.packs.refresh()
    there = set(remote.packs.locations(new))
    notices = cloud_prune.condemned(remote.backend)
    if notices:
        doomed = cloud_prune.only_condemned(remote.packs, (needed - new) | there, notices)
        there -= doomed
        new |= doomed
    if there:  # no point this cache counts holds them: their packs may be gone
        there = cloud_prune.still_there(remote, remote.packs, there)
    report.chunks_already_there += len(needed) - len(new) + len(there)
    sizes = local.catalog.chunk_sizes(list(new))
    if progress:
        progress.expect(sum(stored for digest, (_size, stored) in sizes.items()
                            if digest not in there))
    return new - there, {digest: sizes[digest] for digest in there if digest in sizes}
