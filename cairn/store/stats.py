"""What the repository holds against what it stores, computed from the catalog alone."""

from __future__ import annotations

from dataclasses import dataclass

from cairn.store import marks
from cairn.store.repository import Repository


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
    deleted_stored_bytes: int
    """What those points stored when they were made: about what reclaiming them frees."""


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
        deleted_stored_bytes=sum(p.bytes_stored for p in held),
    )
