"""Offsite: replicate volumes to their cloud repository by a policy, then the cloud's retention.

One implementation for the appliance's offsite schedule and its "run now". The cloud
repository is opened with the local repository's key (or this node's integrity key for an
unencrypted one) and created on first use when the bucket holds none, with the local key
and block size so chunks travel as they are. The cloud's retention runs after each
replication and deletes only in the cloud; what it deletes is recorded in the bucket, so
it is never sent again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cairn.errors import NotARepository, UsageError
from cairn.ops.machine_points import list_machine_points, prune_machine
from cairn.ops.points import list_points
from cairn.ops.retention import prune
from cairn.replication.replicate import Pace, replicate
from cairn.store import marks
from cairn.store.catalog import RecoveryPoint
from cairn.store.cloud_packs import CloudPacks
from cairn.store.repository import Repository
from cairn.store.retention import Policy

if TYPE_CHECKING:
    from cairn.store.cloud import Cloud


@dataclass(frozen=True)
class OffsiteTarget:
    url: str
    endpoint: str | None
    send: str = "all"
    retention: str | None = None
    bandwidth: int | None = None
    until: float | None = None
    immutable: float | None = None
    """seconds each point sent stays under S3 Object Lock (None: no lock)"""


@dataclass
class OffsiteResult:
    points_sent: int = 0
    chunks_sent: int = 0
    bytes_sent: int = 0
    not_sent_removed: int = 0
    left_for_later: int = 0
    cloud_deleted: int = 0
    seconds: float = 0.0
    locked_until: float | None = None
    """when immutable: the Object Lock date of the last point sent"""
    lock_requests: int = 0
    """requests made only to extend Object Lock retention"""
    cloud_stored_bytes: int = 0
    """what the whole cloud repository stores (every machine sending there), after the run"""
    copies: list[RecoveryPoint] = field(default_factory=list)
    """the cloud's points of the volumes, after its retention (not in `json`: many)"""
    flagged_elsewhere: list[tuple[RecoveryPoint, tuple[str, ...]]] = field(
        default_factory=list)
    """flagged points of the cloud that the local repository does not have (made straight
    into the bucket), with their reasons: the appliance alerts them (not in `json`)"""

    def json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("copies", "flagged_elsewhere")}


def local_key(repo_path: Path) -> Path | None:
    key = repo_path / "key"
    return key if key.exists() else None


def open_target(repo_path: Path, url: str, endpoint: str | None) -> Repository:
    """The cloud repository at ``url``, created for ``repo_path`` if the bucket has none."""
    from cairn.store.cloud import init_cloud, open_cloud

    key = local_key(repo_path)
    try:
        return open_cloud(url, endpoint, key)
    except NotARepository:
        with Repository.open(repo_path) as local:
            block_size = local.block_size
        return init_cloud(url, endpoint, block_size, key)


def make_immutable(cloud: Repository, period: float, probe: bool = True) -> str | None:
    """Publish into ``cloud`` under S3 Object Lock for ``period`` seconds (`immutable`).

    With ``probe`` the bucket must first prove that it refuses to delete a locked version
    (`require_object_lock`): immutability is never claimed on a bucket that does not enforce
    it, and the refusal says why. The appliance probes once, when the policy is set; the
    probe also sets the bucket's lifecycle rule (`expire_old_versions`), and what the user
    must do about it, if anything, is returned."""
    from cairn.store.backends.s3 import S3Backend
    from cairn.store.backends.s3_lock import require_object_lock
    from cairn.store.cloud import Cloud
    from cairn.store.immutable import Immutability

    remote = cloud.remote
    if not isinstance(remote, Cloud) or not isinstance(remote.backend, S3Backend):
        raise UsageError(f"{cloud.location} is not a cloud repository: only an S3 bucket "
                         "with Object Lock can hold immutable points")
    advice = None
    if probe:
        require_object_lock(remote.backend)
        advice = expire_old_versions(remote, period)
    remote.immutable(cloud, Immutability(period))
    return advice


def expire_old_versions(remote: Cloud, period: float) -> str | None:
    """A locked bucket keeps every version: overwritten marks, objects others deleted.
    A lifecycle rule expires them once no longer current (a locked one only after its
    lock); when the bucket has other rules or refuses one, what to set is returned."""
    from cairn.store.backends.s3 import S3Backend
    from cairn.store.backends.s3_lock import Retention

    assert isinstance(remote.backend, S3Backend)
    versions = remote.versions or Retention(remote.backend)
    return versions.lifecycle(max(1, math.ceil(period / 86400)))


def flagged_elsewhere(local: Repository, cloud: Repository
                      ) -> list[tuple[RecoveryPoint, tuple[str, ...]]]:
    """The cloud's flagged points that ``local`` does not hold, with their reasons."""
    found = []
    for point_id, m in marks.all_marks(cloud).items():
        point = cloud.catalog.point(point_id)
        if m.flags and point is not None and local.catalog.point(point_id) is None:
            found.append((point, m.flags))
    return found


def cloud_retention(cloud: Repository, volumes: list[str], policy: Policy) -> int:
    """Delete the cloud's points of ``volumes`` that ``policy`` does not keep, by the one
    retention planner (`ops.retention`: points with clones, and any other keep reason,
    stay); returns how many points went. The machine points of a machine go whole
    (`prune_machine`, as the appliance's own retention of an agentless machine), the
    volumes of no machine point one by one."""
    groups = [mp for mp in list_machine_points(cloud)
              if any(m.point.volume in volumes for m in mp.members)]
    grouped = {m.point.volume for mp in groups for m in mp.members}
    deleted = 0
    for machine in sorted({mp.machine for mp in groups}):
        deleted += sum(len(mp.members) for mp in prune_machine(cloud, machine, policy).doomed)
    for volume in volumes:
        if volume not in grouped and cloud.catalog.volume(volume) is not None:
            deleted += len(prune(cloud, volume, policy).deleted)
    return deleted


def _send(local: Repository, cloud: Repository, volumes: list[str], target: OffsiteTarget,
          result: OffsiteResult) -> None:
    """Replicate each volume in turn (a machine point is published once all its disks'
    points are there), adding to ``result``."""
    for volume in volumes:
        if local.catalog.volume(volume) is None:
            continue
        report = replicate(local, cloud, volume, Pace(target.bandwidth, target.until),
                           send=target.send)
        result.points_sent += len(report.points)
        result.chunks_sent += report.chunks_sent
        result.bytes_sent += report.bytes_sent
        result.not_sent_removed += report.not_sent_removed
        result.left_for_later += report.left_for_later
        result.locked_until = report.locked_until or result.locked_until
        result.lock_requests = max(result.lock_requests, report.lock_requests)
        result.seconds += report.seconds


def replicate_volumes(repo_path: Path, volumes: list[str], target: OffsiteTarget
                      ) -> OffsiteResult:
    """Send what ``target`` selects of each volume, then apply the cloud's retention; the
    result lists the cloud's points of ``volumes`` afterwards."""
    result = OffsiteResult()
    with Repository.open(repo_path) as local, \
            open_target(repo_path, target.url, target.endpoint) as cloud:
        if target.immutable:
            make_immutable(cloud, target.immutable, probe=False)
        _send(local, cloud, volumes, target, result)
        if target.retention:
            result.cloud_deleted += cloud_retention(cloud, volumes,
                                                    Policy.parse(target.retention))
        for volume in volumes:
            if cloud.catalog.volume(volume) is not None:
                result.copies += [i.point for i in list_points(cloud, volume)]
        result.cloud_stored_bytes = cloud_bytes(cloud)
        result.flagged_elsewhere = flagged_elsewhere(local, cloud)
    result.seconds = round(result.seconds, 3)
    return result


def cloud_bytes(cloud: Repository) -> int:
    """What the cloud repository's chunks take in its bucket: its packs, by their index (a
    sum over every point's chunks would read every block map: `cloud_counts`)."""
    packs = cloud.chunks.backend
    if isinstance(packs, CloudPacks):
        return packs.stored_bytes()
    return cloud.catalog.chunk_totals().stored
