"""Moving a legacy cloud repository's chunks (one object each, ``chunks/abc/<hash>``) into
packs, in place, resumably, while others read and write it.

Repositories made before packs hold one object per 64 KiB chunk: a PUT and a GET per chunk,
and a million objects per 64 GiB stored. `convert` reads them a pack's worth at a time,
checks each against its hash, writes them as a pack with its index (`CloudPacks.write_pack`,
which returns once both are in the bucket), and only then deletes those objects. So a
conversion killed at any point loses nothing: a chunk is in its legacy object, in a pack,
or in both; the next run skips the objects whose chunk a pack already holds (and deletes
them) and packs the rest. Readers go on throughout: a chunk is read through the index first
and from its legacy object otherwise (`CloudPacks.get`), and a writer never writes legacy
objects. A chunk whose only pack copies are condemned (`cloud_prune`) counts as not packed:
it is packed again rather than trusted to a pack a prune may delete. A legacy object that
fails its hash is left where it is and reported (`cairn verify --repair` mends it); one that
vanished meanwhile (another conversion took it) is skipped. On a bucket with Object Lock, an
object still locked is packed but left in place, its pack locked as long, and deleted by a
later conversion or prune once its date passed (`cloud_held`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cairn import logs
from cairn.errors import CairnError, Corruption, S3AccessDenied, UsageError
from cairn.store.cloud_held import Holds, delete_legacy, retention_of
from cairn.store.cloud_packs import pack_bytes
from cairn.store.cloud_prune import condemned, listed, only_condemned, packs_of
from cairn.store.phases import Progress, phase

if TYPE_CHECKING:
    from cairn.store.cloud import Cloud
    from cairn.store.cloud_packs import CloudPacks
    from cairn.store.cloudlock import Bucket
    from cairn.store.repository import Repository

_LEGACY = re.compile(r"^chunks/[0-9a-f]{3}/([0-9a-f]{64})$")
GROUP = 1000
"""legacy objects looked up (and deleted) per step: one DeleteObjects request"""


@dataclass
class ConvertReport:
    chunks_packed: int = 0
    chunks_already_packed: int = 0
    objects_deleted: int = 0
    bytes_packed: int = 0
    packs_written: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    """legacy objects left in place: they fail their hash"""
    held_objects: int = 0
    """legacy objects packed but left in place: Object Lock keeps them (`cloud_held`)"""
    held_until: float | None = None
    """the latest date one of them is locked until"""
    seconds: float = 0.0

    def json(self) -> dict[str, Any]:
        return {"chunks_packed": self.chunks_packed,
                "chunks_already_packed": self.chunks_already_packed,
                "objects_deleted": self.objects_deleted, "bytes_packed": self.bytes_packed,
                "packs_written": self.packs_written, "damaged": self.damaged,
                "held_objects": self.held_objects, "held_until": self.held_until,
                "seconds": self.seconds}


def convert(repo: Repository, progress: Progress | None = None) -> ConvertReport:
    """Pack every legacy chunk object of ``repo`` (a cloud repository), then delete it;
    ``progress`` is told the legacy bytes looked at."""
    from cairn.store.cloud import Cloud

    cloud = repo.remote
    if not isinstance(cloud, Cloud):
        raise UsageError(f"{repo.location} is not a cloud repository: give s3://BUCKET/PREFIX")
    started = time.monotonic()
    packs = packs_of(repo)
    try:
        packs.refresh(full=True)
    except S3AccessDenied as exc:
        raise CairnError(f"cannot list index/ in {cloud.where}: {exc}; a conversion needs "
                         "the rights to list, read, write and delete objects; nothing was "
                         "changed") from None
    sizes = dict(listed("chunks/", cloud.where, cloud.backend.sizes("chunks")))
    names = sorted(sizes)
    retention = retention_of(cloud)
    holds = Holds.take(cloud, retention, due_only=False) if retention else None
    at = _Where(repo, cloud, packs, cloud.backend, condemned(cloud.backend), holds)
    report = ConvertReport()
    total = sum(sizes.values())
    with phase(progress, total, "legacy chunks") as advance:
        for start in range(0, len(names), GROUP):
            group = names[start:start + GROUP]
            _step(at, _legacy(group), report)
            advance(sum(sizes[n] for n in group))
    if holds is not None:
        holds.kept = {n: u for n, u in holds.kept.items() if n in sizes}
        holds.close()
        report.held_objects = len(holds.kept)
        report.held_until = max(holds.kept.values(), default=None)
    report.seconds = round(time.monotonic() - started, 3)
    logs.event("cloud.convert", where=cloud.where, packed=report.chunks_packed,
               deleted=report.objects_deleted, packs=len(report.packs_written))
    return report


def _legacy(names: list[str]) -> dict[bytes, str]:
    """Digest -> object, for the names that are chunk objects cairn writes (others stay)."""
    found = {}
    for name in names:
        match = _LEGACY.match(name)
        if match and name[7:10] == match.group(1)[:3]:
            found[bytes.fromhex(match.group(1))] = name
    return found


@dataclass(frozen=True)
class _Where:
    repo: Repository
    cloud: Cloud
    packs: CloudPacks
    bucket: Bucket
    notices: dict[str, float]
    holds: Holds | None
    """on a bucket with Object Lock: the objects it keeps (`cloud_held`)"""


def _step(at: _Where, group: dict[bytes, str], report: ConvertReport) -> None:
    """Pack the chunks of ``group`` that no sound pack holds, then delete the group."""
    packs = at.packs
    copies = packs.locations(list(group))
    doomed = only_condemned(packs, [d for d in group if d in copies], at.notices)
    done = [d for d in group if d in copies and d not in doomed]
    report.chunks_already_packed += len(done)
    batch: list[tuple[bytes, bytes]] = []
    plain: dict[bytes, int] = {}  # sizes before compression, for the indexes
    size = 0
    for digest, stored, content in _read(at, [d for d in group if d not in done], group,
                                         report):
        batch.append((digest, stored))
        plain[digest] = content
        size += len(stored)
        if size >= pack_bytes():
            done += _write(packs, batch, plain, report)
            batch, size = [], 0
    if batch:
        done += _write(packs, batch, plain, report)
    free = [group[d] for d in done]
    if at.holds is not None:  # a locked object stays, its pack locked as long (`cloud_held`)
        free = at.holds.free(free)
        at.holds.lock_packs(packs, [group[d] for d in done if group[d] in at.holds.kept])
    delete_legacy(at.cloud, free)
    report.objects_deleted += len(free)


def _read(at: _Where, digests: list[bytes], group: dict[bytes, str],
          report: ConvertReport) -> Iterator[tuple[bytes, bytes, int]]:
    """The stored bytes of each of ``digests``' legacy objects, checked against its hash,
    and the size of its content."""
    by_name = {group[d]: d for d in digests}

    def fetch(name: str) -> tuple[bytes, bytes | None, int]:
        digest = by_name[name]
        try:
            stored = at.bucket.get(name)
        except KeyError:
            return digest, None, 0
        try:
            size = len(at.repo.chunks.decode(digest, stored))
        except Corruption:
            report.damaged.append(name)
            return digest, None, 0
        return digest, stored, size

    from cairn.store.parallel import bounded_map

    return ((d, s, n) for d, s, n in bounded_map(fetch, list(by_name), 16) if s is not None)


def _write(packs: CloudPacks, batch: list[tuple[bytes, bytes]], plain: dict[bytes, int],
           report: ConvertReport) -> list[bytes]:
    report.packs_written.append(packs.write_pack(batch, plain))
    report.chunks_packed += len(batch)
    report.bytes_packed += sum(len(stored) for _d, stored in batch)
    return [digest for digest, _stored in batch]
