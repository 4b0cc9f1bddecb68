"""What the repository holds against what it stores, computed from the catalog alone."""

from __future__ import annotations

from dataclasses import dataclass

from cairn.store import marks
from cairn.store.catalog import Volume
from cairn.store.cloud_counts import view
from cairn.store.repository import Repository
from cairn.store.space import freed_by


@dataclass(frozen=True)
class Stats:
    volumes: int
    points: int
    logical_bytes: int
    allocated_bytes: int
    chunks: int
    unique_bytes: int | None
    """None when a cloud cache does not know every chunk's size before compression (the
    pack indexes carry it since 2026-12-01; of older packs, only the node that sent a
    chunk knows it): so are both ratios built on it"""
    unsized_chunks: int
    """how many chunks' sizes before compression are unknown here"""
    stored_bytes: int | None
    """None when a chunk is missing from its cloud's listing (`verify` names it)"""
    dedup_ratio: float | None
    compression_ratio: float | None
    overall_ratio: float | None
    deleted_points: int
    """Deleted points held restorable for the deletion window (`marks`)."""
    deleted_frees_bytes: int | None
    """What reclaiming those points will free, as of now (`space.freed_by`)."""
    by_volume: list[VolumeStats]


@dataclass(frozen=True)
class VolumeStats:
    """One volume: ``added_bytes`` is what its live points added to this repository when
    they came (a backup's new chunks; a replicated point's, those its cloud lacked);
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
    with view(repo):  # a cloud cache counts every volume for this (`cloud_counts`)
        return _stats(repo)


def _stats(repo: Repository) -> Stats:
    held = [p for p, _m in marks.held_points(repo)]
    points = repo.catalog.points()
    totals = repo.catalog.chunk_totals()
    unique = None if totals.unsized else totals.plain
    stored = None if totals.unstored else totals.stored
    logical = sum(p.size for p in points)
    allocated = sum(p.allocated for p in points)
    return Stats(
        volumes=len(repo.catalog.volumes()),
        points=len(points) - len(held),
        logical_bytes=logical,
        allocated_bytes=allocated,
        chunks=totals.chunks,
        unique_bytes=unique,
        unsized_chunks=totals.unsized,
        stored_bytes=stored,
        dedup_ratio=_ratio(allocated, unique),
        compression_ratio=None if unique is None else _ratio(unique, stored),
        overall_ratio=_ratio(logical, stored),
        deleted_points=len(held),
        deleted_frees_bytes=freed_by(repo, held) if held else 0,
        by_volume=[_volume(repo, v) for v in repo.catalog.volumes()],
    )


def _ratio(part: int, whole: int | None) -> float | None:
    if whole is None:
        return None
    return round(part / whole, 3) if whole else 1.0


def _volume(repo: Repository, volume: Volume) -> VolumeStats:
    points = marks.live_points(repo, volume.id)
    every = repo.catalog.points(volume.id)
    return VolumeStats(volume.name, len(points), points[-1].size if points else 0,
                       sum(p.bytes_stored for p in points),
                       freed_by(repo, every) if every else 0)
