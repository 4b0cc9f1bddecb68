"""Listing and deleting points, and a point as JSON.

`point_json` is the one JSON form of a point: `cairn points --json`, `cairn backup --json`,
the REST API and the web console all print it. Its fields are the point's public fields
(`RecoveryPoint.public`, the same ones a cloud bucket's point record holds) plus its last
boot check when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cairn.store import marks
from cairn.store.catalog import RecoveryPoint, Verification
from cairn.store.repository import Repository


@dataclass(frozen=True)
class PointInfo:
    """A point with its last screenshot verification (None when never checked)."""

    point: RecoveryPoint
    verification: Verification | None


@dataclass(frozen=True)
class DeleteResult:
    deleted: list[str]
    """ids of the volume points named and deleted"""
    machine_points: list[str]
    """ids of the machine points named and deleted whole (with every disk's point)"""
    frees_bytes: int | None
    """stored bytes deleting them frees (at once with ``now``, else when their window
    ends); None when it cannot be known here"""
    freed_chunks: int = 0
    """chunks freed now: those only the points held (``now``), else those of held points
    whose window had passed"""
    held_until: float | None = None
    """when the points are reclaimed (restorable with `undelete` until then); None with
    ``now`` or ``dry_run``"""


def verification_json(v: Verification | None) -> dict[str, Any] | None:
    if v is None:
        return None
    return {"status": v.status, "reason": v.reason, "ocr_text": v.ocr_text,
            "screenshot": v.screenshot, "seconds": v.seconds, "at": v.at}


def point_json(point: RecoveryPoint) -> dict[str, Any]:
    """The point's public fields; ``created`` is Unix time, as in every cairn JSON."""
    return point.public()


def info_json(info: PointInfo) -> dict[str, Any]:
    """`point_json` plus the point's last boot check."""
    return {**point_json(info.point), "verification": verification_json(info.verification)}


def list_points(repo: Repository, volume: str | None = None) -> list[PointInfo]:
    """Points in creation order, of one volume when named (`UnknownVolume` if it has none);
    points deleted and held for the deletion window are left out."""
    points = marks.live_points(repo, repo.volume(volume).id if volume else None)
    checks = repo.catalog.verifications()
    return [PointInfo(p, checks.get(p.id)) for p in points]


def points_of(repo: Repository, volumes: Sequence[str]) -> dict[str, list[PointInfo]]:
    """The points of each of ``volumes``; a volume with no point yet has an empty list."""
    checks = repo.catalog.verifications()
    out: dict[str, list[PointInfo]] = {}
    for name in volumes:
        volume = repo.catalog.volume(name)
        points = marks.live_points(repo, volume.id) if volume is not None else []
        out[name] = [PointInfo(p, checks.get(p.id)) for p in points]
    return out


def delete(repo: Repository, refs: Sequence[str], now: bool = False,
           dry_run: bool = False) -> DeleteResult:
    """Delete what ``refs`` name (point ids, prefixes, ``VOLUME@latest``, machine points).

    The points are held, restorable with `undelete`, for the deletion window and reclaimed
    by a later write; ``now`` frees what only they hold at once; ``dry_run`` only says what
    would go and what it frees. A point with a clone or a lock is refused (`InUse`,
    `PointLocked`) before anything is deleted, either way."""
    # here, not at the top: `cairn backup` and `cairn points` print points with this module
    from cairn.ops.machine_points import delete_machine_points
    from cairn.ops.machine_points import resolve as resolve_machine_point
    from cairn.ops.retention import purge
    from cairn.store.delete import delete_points
    from cairn.store.space import freed_by

    targets = [(ref, resolve_machine_point(repo, ref)) for ref in refs]
    machine_points = [mp for _, mp in targets if mp is not None]
    points = [repo.resolve(ref) for ref, mp in targets if mp is None]
    every = points + [m.point for mp in machine_points for m in mp.members]
    result = DeleteResult([p.id for p in points], [mp.id for mp in machine_points],
                          freed_by(repo, every))
    if dry_run:
        return result
    if now:
        freed = delete_points(repo, points) + delete_machine_points(repo, machine_points)
        if repo.remote is not None:
            from cairn.ops.cloud_space import after_delete

            after_delete(repo)
        return replace(result, freed_chunks=freed)
    until = marks.hold(repo, every)
    return replace(result, held_until=until, freed_chunks=purge(repo))


def undelete(repo: Repository, refs: Sequence[str]) -> list[str]:
    """Bring back points deleted within the deletion window (a machine point with every
    disk's point); returns their ids."""
    from cairn.ops.machine_points import points_of

    points = points_of(repo, refs)
    for point in points:
        marks.undelete(repo, point)
    return [p.id for p in points]
