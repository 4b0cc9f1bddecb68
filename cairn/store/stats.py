"""What the repository holds against what it stores, computed from the catalog alone."""

from __future__ import annotations

from dataclasses import dataclass

from cairn.store import marks
from cairn.store.catalog import Volume
from cairn.store.repository import Repository
from cairn.store.space import freed_by


@dataclass(frozen=True)
class Stats:
    volumes: int
    points: int
    logical_bytes: int
    allocated_bytes: int
    chunks: int
    unique_bytes: int
    stored_bytes: int
    dedup_ratio: float
    compression_ratio: float
    overall_ratio: float
    deleted_points: int
    """Deleted points held restorable for the deletion window (`marks`)."""
    deleted_frees_bytes: int | None
    """What reclaiming those points will free, as of now (`space.freed_by`)."""
    by_volume: list[VolumeStats]


@dataclass(frozen=True)
class VolumeStats:
    """One volume: ``added_bytes`` is what its live points' backups stored when made;
    ``frees_bytes`` what deleting the whole volume would free now (`space.freed_by`: a
    walk of its block maps, never of its data; None when one is damaged)."""

    volume: str
    points: int
    size: int
    added_bytes: int
    frees_bytes: int | None


def repository_stats(repo: Repository) -> Stats:
    """Ratios: dedup = data in all points / unique chunk bytes; compression = unique / stored.

    Zero blocks count in the logical size but not as data: thin provisioning shows in the
    overall ratio (logical / stored), not as dedup.
    """
    held = [p for p, _m in marks.held_points(repo)]
    points = repo.catalog.points()
    chunks, unique, stored = repo.catalog.chunk_totals()
    logical = sum(p.size for p in points)
    allocated = sum(p.allocated for p in points)
    return Stats(
        volumes=len(repo.catalog.volumes()),
        points=len(points) - len(held),
        logical_bytes=logical,
        allocated_bytes=allocated,
        chunks=chunks,
        unique_bytes=unique,
        stored_bytes=stored,
        dedup_ratio=round(allocated / unique, 3) if unique else 1.0,
        compression_ratio=round(unique / stored, 3) if stored else 1.0,
        overall_ratio=round(logical / stored, 3) if stored else 1.0,
        deleted_points=len(held),
        deleted_frees_bytes=freed_by(repo, held) if held else 0,
        by_volume=[_volume(repo, v) for v in repo.catalog.volumes()],
    )


def _volume(repo: Repository, volume: Volume) -> VolumeStats:
    points = marks.live_points(repo, volume.id)
    every = repo.catalog.points(volume.id)
    return VolumeStats(volume.name, len(points), points[-1].size if points else 0,
                       sum(p.bytes_stored for p in points),
                       freed_by(repo, every) if every else 0)
