"""Machine points in a cloud bucket: the grouping of a machine's disks' points, beside them.

Layout (under the repository's prefix)::

    machines/<machine>/<machine point id>.json   one sealed record per machine point:
        {repository, id, machine, created, consistency, note,
         volumes: [{disk, point, volume}, ...] in the machine's disk order}

Replication publishes a record only once every point it names is published (`publish_complete`),
so a record never names a point the bucket never held; deleting or pruning a machine point
removes its record after its points (`unpublish`). Every node's sync (`sync`, run by
`Cloud.sync`) rebuilds its cache's machine points from the records: a group whose record is
gone is dropped, and a record whose points are all gone is skipped (an incremental sync
takes a new record from another node's batch when one carries it: `cloud_batch`). So
``points --machine``, restore, prune and retention of a cloud repository see machine points
as a local one does.

A record is sealed with the repository's key and bound to its object name and repository,
as point records are (`records`): one that was planted, moved or altered is refused, not
skipped. Under Object Lock a record is locked as long as the latest of its points' records
(the generation's horizon when publishing immutably and none is known), so whoever holds
the bucket's keys cannot remove the grouping while its points stand: a DELETE only hides
it behind a marker, which a full sync reads past and a writer's sync removes (`Cloud.revive`).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cairn.errors import Corruption, UsageError
from cairn.store import cloud_batch, cloud_marks
from cairn.store.catalog import RecoveryPoint
from cairn.store.machine_points import MachinePoint, MachinePoints, check_machine_name
from cairn.store.repository import Repository, check_volume_name

if TYPE_CHECKING:
    from cairn.store.cloud import Cloud
    from cairn.store.cloud_sync import Entry

PREFIX = "machines"
_ID = re.compile(r"^[0-9a-f]{8,64}$")
_CONSISTENCY = ("application", "crash")


@dataclass(frozen=True)
class Record:
    """A machine point as its bucket record states it."""

    id: str
    machine: str
    created: float
    consistency: str
    note: str
    volumes: tuple[tuple[str, str, str], ...]
    """(disk, point id, volume) in disk order"""


def record_name(machine: str, point_id: str) -> str:
    return f"{PREFIX}/{machine}/{point_id}.json"


def _cloud(repo: Repository) -> Cloud:
    from cairn.store.cloud import Cloud

    assert isinstance(repo.remote, Cloud)
    return repo.remote


def _record(cloud: Cloud, mp: MachinePoint) -> dict[str, Any]:
    return {"repository": cloud.repository_id, "id": mp.id, "machine": mp.machine,
            "created": mp.created, "consistency": mp.consistency, "note": mp.note,
            "volumes": [{"disk": m.disk, "point": m.point.id, "volume": m.point.volume}
                        for m in mp.members]}


def publish_complete(local: Repository, cloud: Repository) -> list[str]:
    """Publish every machine point of ``local`` whose disks' points the cloud holds and
    whose record it lacks, and add it to the cloud's cache; the ids published."""
    remote = _cloud(cloud)
    there = MachinePoints(cloud.catalog)
    published = []
    for mp in MachinePoints(local.catalog).list():
        placed = [cloud.catalog.point(m.point.id) for m in mp.members]
        if not placed or None in placed or there.get(mp.id) is not None:
            continue
        name = record_name(mp.machine, mp.id)
        data = json.dumps(remote.sealer.seal(_record(remote, mp))).encode()
        until = cloud_marks.records_until(cloud, [m.point.id for m in mp.members])
        if not _create(remote, name, data, until):
            found = read_record(remote, name, remote.backend.get(name))
            if [v[1] for v in found.volumes] != [m.point.id for m in mp.members]:
                raise Corruption(f"{name} in {remote.where} already holds another machine "
                                 "point: it was planted; remove it")
        entry = remote.announce("put", name)
        cloud_batch.remember(cloud, {entry: data})
        there.record(mp.id, mp.machine, mp.created, mp.consistency, mp.note,
                     [(m.disk, p) for m, p in zip(mp.members, placed, strict=True)
                      if p is not None])
        published.append(mp.id)
    return published


def _create(remote: Cloud, name: str, data: bytes, until: float | None) -> bool:
    """Create a record (False when it exists), under Object Lock until ``until`` (its
    points' records' lock) where the bucket locks: the horizon of an immutable publisher
    when no point of it is known locked."""
    if remote.locker is not None:
        return remote.locker.publish(name, data, until or remote.locker.horizon())
    if until is not None and until > time.time() and remote.can_lock():
        assert remote.versions is not None
        return remote.versions.put(name, data, until, only_new=True)
    return remote.backend.put_new(name, data)


def unpublish(repo: Repository, groups: list[tuple[str, str]]) -> None:
    """Remove the records of the machine points ``groups`` names (``(id, machine)``), once
    their points are gone; nothing for a local repository."""
    if repo.remote is None:
        return
    remote = _cloud(repo)
    for point_id, machine in groups:
        remote.backend.delete(record_name(machine, point_id))
        remote.announce("del", record_name(machine, point_id))


def read_record(cloud: Cloud, name: str, raw: bytes) -> Record:
    """A machine point record, once sealed, bound to this repository and its own name, and
    every field of the type and range cairn writes."""
    what = f"machine point record {name} in {cloud.where}"
    record = cloud.sealer.open(raw, what)
    try:
        found = Record(
            str(record["id"]), check_machine_name(record["machine"]), float(record["created"]),
            str(record["consistency"]), str(record["note"]),
            tuple((check_volume_name(v["disk"]), str(v["point"]), check_volume_name(v["volume"]))
                  for v in record["volumes"]))
        valid = (record.get("repository") == cloud.repository_id
                 and name == record_name(found.machine, found.id) and bool(_ID.match(found.id))
                 and found.consistency in _CONSISTENCY and math.isfinite(found.created)
                 and bool(found.volumes) and all(_ID.match(v[1]) for v in found.volumes))
    except (KeyError, TypeError, ValueError, AttributeError, UsageError):
        valid = False
    if not valid:
        raise Corruption(f"{what} does not belong at that name in this repository: it was "
                         "moved or altered; restore it from a copy or remove it")
    return found


def _listed(cloud: Cloud) -> dict[str, str]:
    """Machine point id -> record name, from one listing (and the records hidden behind a
    delete marker while locked); a name cairn never writes is refused (someone else wrote
    to the bucket)."""
    listed = {}
    for name in [*cloud.backend.list(PREFIX), *cloud.locked_hidden(PREFIX)]:
        parts = name.split("/")
        if len(parts) != 3 or not name.endswith(".json") or \
                not _ID.match(parts[2].removesuffix(".json")):
            raise Corruption(f"object {name!r} in {cloud.where} is not a machine point record "
                             "cairn writes: someone else wrote to the bucket; remove it")
        listed[parts[2].removesuffix(".json")] = name
    return listed


def sync(cloud: Cloud, repo: Repository) -> None:
    """Bring the cache's machine points to the bucket's records (inside a full
    `Cloud.sync`, after the points): groups whose record is gone are dropped, new records
    are added with those of their points the cache holds."""
    listed = _listed(cloud)
    store = MachinePoints(repo.catalog)
    known = {mp.id for mp in store.list()}
    for gone in known - listed.keys():
        store.forget(gone)
    _add(cloud, repo, [listed[i] for i in listed.keys() - known])


def is_new(repo: Repository, point_id: str) -> bool:
    """Whether the cache lacks the machine point ``point_id``."""
    return MachinePoints(repo.catalog).get(point_id) is None


def take(cloud: Cloud, repo: Repository, entries: list[Entry],
         carried: dict[str, bytes]) -> int:
    """What the feed says changed (an incremental `Cloud.sync`): records put are added
    when new here (from a batch's copy where ``carried``, by feed entry, has one that
    opens: `cloud_batch`), records removed are dropped once a HEAD says they are gone. The
    records are kept for this node's batches; returns how many were read one by one."""
    store = MachinePoints(repo.catalog)
    new, gone = [], []
    entry_of = {e.target: e.name for e in sorted(entries, key=lambda e: e.name)}
    for e in entries:
        point_id = e.target.rpartition("/")[2].removesuffix(".json")
        if e.target.count("/") != 2 or not e.target.endswith(".json") or \
                not _ID.match(point_id):
            continue  # the feed is only a hint: a name cairn never writes is skipped
        if e.op == "put" and store.get(point_id) is None:
            new.append(e.target)
        elif e.op == "del" and not cloud.backend.exists(e.target):
            gone.append(point_id)
    for point_id in gone:
        if store.get(point_id) is not None:
            store.forget(point_id)
    read = _add(cloud, repo, new, {n: carried[entry_of[n]] for n in new
                                   if entry_of[n] in carried})
    cloud_batch.remember(repo, {entry_of[name]: raw for name, (raw, _got) in read.items()})
    return sum(got for _raw, got in read.values())


def _read(cloud: Cloud, name: str, copy: bytes | None) -> tuple[Record, bytes, bool] | None:
    """A record, with its bytes and whether they were read (not a batch's ``copy``, which
    is taken only when it opens as the record would); None when it went since listed."""
    carried = cloud_batch.opened(copy, lambda raw: read_record(cloud, name, raw))
    if carried is not None and copy is not None:
        return carried, copy, False
    try:
        raw = cloud.backend.get(name)
    except KeyError:
        return None
    return read_record(cloud, name, raw), raw, True


def _add(cloud: Cloud, repo: Repository, names: list[str],
         copies: dict[str, bytes] | None = None) -> dict[str, tuple[bytes, bool]]:
    """Add the machine points whose records are ``names`` (one deleted since it was
    listed is skipped), with those of their points the cache holds; returns each record
    found, its bytes and whether it was read (not one of ``copies``)."""
    store = MachinePoints(repo.catalog)
    found: dict[str, tuple[bytes, bool]] = {}
    for name in names:
        got = _read(cloud, name, (copies or {}).get(name))
        if got is None:
            continue
        record, raw, fetched = got
        found[name] = (raw, fetched)
        members: list[tuple[str, RecoveryPoint]] = []
        for disk, member, volume in record.volumes:
            point = repo.catalog.point(member)
            if point is not None and point.volume == volume:
                members.append((disk, point))
        if members and store.get(record.id) is None:
            store.record(record.id, record.machine, record.created, record.consistency,
                         record.note, members)
    return found
