"""Legacy chunk objects a conversion packed but S3 Object Lock keeps: *held* until their
retention passes, then deleted by a later `cairn cloud convert` or `cairn cloud prune`.

An immutable repository made before packs locked each chunk object a point needs
(COMPLIANCE retention, `immutable`). No one can delete such an object before its date; a
plain DELETE only hides it behind a delete marker, frees nothing, and leaves a locked
version that no later run would look for. So `cloud_convert` packs the chunk as usual but
leaves a locked object where it is, visible, and:

1. locks the pack holding its chunk (and that pack's index) until the object's date first,
   so what the point was promised stays true by its pack alone: no one deletes the chunk's
   last copy before that date;
2. writes a notice ``held/<until>-<count>-<random>``: the repository's sealed JSON
   ``{repository, objects: {name: until}}``, ``<until>`` the latest date in it (11-digit
   epoch seconds, so names sort by it) and ``<count>`` how many objects it names, so what
   waits, and until when, is known from one listing.

`release` (a prune's, or the start of a conversion) takes the notices whose date passed by
the server's clock and deletes each object they name once a fresh read of its retention
shows it free and a pack no prune condemned holds its chunk. An object a writer locked
again meanwhile is held in a new notice (its pack locked as long); one whose chunk no sound
pack holds stays where it is, as a legacy object the next conversion packs again. The old
notice goes last: a run killed midway leaves it, and the next run does it again.

Ages are the server's: ``now`` is the LastModified of an object just written (then
deleted), as S3 judges retention by its own clock.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cairn import logs
from cairn.errors import CairnError, Corruption, S3AccessDenied
from cairn.store.cloud_packs import chunk_digest, index_object, pack_object
from cairn.store.cloud_prune import condemned, listed, only_condemned
from cairn.store.parallel import bounded_map

if TYPE_CHECKING:
    from cairn.store.backends.s3_lock import Retention
    from cairn.store.cloud import Cloud
    from cairn.store.cloud_packs import CloudPacks

HELD = "held"
GROUP = 1000
"""objects named per notice at most"""
SPREAD = 3600.0
"""seconds between the earliest and the latest date in one notice, at most"""
CLOCK = "held.time"
_NOTICE = re.compile(r"^held/(\d{11})-(\d+)-[0-9a-f]{16}$")
WORKERS = 16


@dataclass(frozen=True)
class Waiting:
    """What Object Lock still keeps: how many legacy objects, until when at the latest."""

    objects: int = 0
    until: float | None = None


def waiting(cloud: Cloud) -> Waiting:
    """What the notices name (one LIST, no GET)."""
    count, until = 0, None
    for name, _stamp in listed(f"{HELD}/", cloud.where, cloud.backend.stamps(HELD)):
        match = _NOTICE.match(name)
        if match:
            count += int(match.group(2))
            until = max(until or 0.0, float(match.group(1)))
    return Waiting(count, until)


def retention_of(cloud: Cloud) -> Retention | None:
    """The bucket's retention calls when it was made with Object Lock, else None."""
    versions = cloud.versions
    return versions if versions is not None and versions.lock_enabled() else None


@dataclass
class Holds:
    """One run's view of the held objects: what the notices it took say, what it keeps."""

    cloud: Cloud
    retention: Retention
    now: float
    taken: list[str]
    """the notices this run replaces when it ends"""
    known: dict[str, float]
    """object -> the date its notice gave"""
    kept: dict[str, float] = field(default_factory=dict)
    locked: dict[str, float] = field(default_factory=dict)
    """pack -> the date this run locked it until"""
    released: int = 0

    @classmethod
    def take(cls, cloud: Cloud, retention: Retention, due_only: bool) -> Holds:
        """The notices (those whose date passed, with ``due_only``), read and checked."""
        dates = {n: float(m.group(1)) for n, _s in listed(f"{HELD}/", cloud.where,
                                                          cloud.backend.stamps(HELD))
                 if (m := _NOTICE.match(n))}
        if due_only and not dates:
            return cls(cloud, retention, 0.0, [], {})  # nothing held: no request more
        now = _server_now(cloud)
        taken = sorted(n for n, until in dates.items() if not due_only or until <= now)
        known: dict[str, float] = {}
        for name in taken:
            known.update(_read(cloud, name))
        return cls(cloud, retention, now, taken, known)

    def free(self, names: list[str]) -> list[str]:
        """Those of ``names`` no lock keeps now (asking the bucket, but for those a notice
        says are locked still); the others are kept, in the notice this run writes."""
        unsure = [n for n in names if self.known.get(n, 0.0) <= self.now]
        self.kept.update((n, self.known[n]) for n in names if self.known.get(n, 0.0) > self.now)
        free = []
        for name, until in bounded_map(lambda n: (n, self.retention.until(n)), unsure, WORKERS):
            if until is not None and until > self.now:
                self.kept[name] = until
            else:
                free.append(name)
        return free

    def lock_packs(self, packs: CloudPacks, names: Iterable[str]) -> None:
        """Lock the pack holding each kept object's chunk (and its index) until the
        object's date: the point's promise moves to the pack before anything else."""
        want: dict[str, float] = {}
        where = packs.locations(d for n in names if (d := chunk_digest(n)) is not None)
        for name in names:
            digest = chunk_digest(name)
            if digest in where and name in self.kept:
                pack = where[digest][0]
                want[pack] = max(want.get(pack, 0.0), self.kept[name])
        stale = [(p, u) for p, u in want.items() if self.locked.get(p, 0.0) < u]
        for pack, until in stale:
            for obj in (pack_object(pack), index_object(pack)):
                try:
                    self.retention.extend(obj, until)
                except KeyError:
                    raise Corruption(f"{obj} in {self.cloud.where} went while its chunks were "
                                     "being locked in it: nothing was deleted; run the "
                                     "conversion again") from None
            self.locked[pack] = until

    def close(self) -> None:
        """Write the notices of what this run keeps, then delete the ones it took. Objects
        are put in notices in the order of their dates, so a notice whose date passed
        names objects whose locks all passed, not some locked for long beside them."""
        for part in _notices(sorted(self.kept.items(), key=lambda item: (item[1], item[0]))):
            until = max(part.values())
            record = self.cloud.sealer.seal({"repository": self.cloud.repository_id,
                                             "objects": part})
            self.cloud.backend.put(
                f"{HELD}/{int(until) + 1:011d}-{len(part)}-{os.urandom(8).hex()}",
                json.dumps(record, separators=(",", ":")).encode())
        for name in self.taken:
            self.cloud.backend.delete(name)


def delete_legacy(cloud: Cloud, names: list[str]) -> None:
    """Delete legacy chunk objects whose chunks are packed, or say which could not go."""
    try:
        cloud.backend.delete_many(names)
    except S3AccessDenied as exc:
        raise CairnError(
            f"cannot delete legacy object(s) {', '.join(names[:2])}"
            f"{f' and {len(names) - 2} more' if len(names) > 2 else ''} in {cloud.where}: "
            f"{exc}; their chunks are in packs already, so nothing is lost: run it again "
            "with a key that may delete objects") from None


def _server_now(cloud: Cloud) -> float:
    """The server's time, from an object written, read and deleted again (versions and
    all: in a versioned bucket an object overwritten at each run would pile up versions)."""
    bucket = cloud.backend
    bucket.put(CLOCK, b"")
    now = bucket.stamp(CLOCK)
    bucket.delete(CLOCK)
    return now


def _notices(kept: list[tuple[str, float]]) -> Iterator[dict[str, float]]:
    """``kept`` (in the order of their dates) cut into notices of at most GROUP objects
    whose dates lie within SPREAD of the first: an object waits at most that much longer
    than its own lock."""
    part: dict[str, float] = {}
    first = 0.0
    for name, until in kept:
        if part and (len(part) >= GROUP or until > first + SPREAD):
            yield part
            part = {}
        if not part:
            first = until
        part[name] = until
    if part:
        yield part


def _read(cloud: Cloud, name: str) -> dict[str, float]:
    """The objects a notice names, once it opens with the repository's key."""
    what = f"notice {name} in {cloud.where}"
    try:
        record = cloud.sealer.open(cloud.backend.get(name), what)
    except KeyError:
        return {}  # another run replaced it since the listing
    objects = record.get("objects")
    if record.get("repository") != cloud.repository_id or not isinstance(objects, dict) \
            or not all(chunk_digest(n) and isinstance(u, (int, float))
                       for n, u in objects.items()):
        raise Corruption(f"{what} names another repository or objects that are not chunk "
                         "objects: it was altered; remove it (the objects it held are "
                         "found again by `cairn cloud convert`)")
    return {n: float(u) for n, u in objects.items()}


def release(cloud: Cloud, packs: CloudPacks) -> tuple[int, Waiting]:
    """Delete the held objects whose date passed and whose chunk a sound pack holds;
    returns how many went, and what still waits."""
    retention = retention_of(cloud)
    if retention is None:
        return 0, Waiting()
    holds = Holds.take(cloud, retention, due_only=True)
    if holds.taken:
        packs.refresh()
        digests = {n: chunk_digest(n) for n in holds.known}
        where = packs.locations(d for d in digests.values() if d is not None)
        doomed = only_condemned(packs, list(where), condemned(cloud.backend))
        sound = [n for n, d in digests.items() if d in where and d not in doomed]
        free = holds.free(sound)
        holds.lock_packs(packs, holds.kept)
        delete_legacy(cloud, free)
        holds.released = len(free)
        holds.close()
        logs.event("cloud.held_released", where=cloud.where, released=len(free),
                   kept=len(holds.kept), unpacked=len(holds.known) - len(sound))
    return holds.released, waiting(cloud)
