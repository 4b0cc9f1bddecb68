"""What deleting points would free now, in stored bytes: the walk a delete makes, without
the delete.

`freed_by` follows `runs.delete_decrements` for each point in turn, between the nearest
neighbours still there (deleting several points of a volume merges runs across all of
them), and sums the stored size of the chunks whose every run would end. Its cost is a
delete's: block-map nodes only where a point differs from its neighbours (a point that
shares everything with the one before costs almost nothing; the only point of a volume
costs a walk of its block map), plus one catalog lookup per 500 chunks named. Nothing is
cached, so the figure is true when shown: it moves as neighbours go or other volumes come
to share a chunk. ``bytes_stored`` of a point is another thing: what its backup added then.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from cairn.errors import Corruption
from cairn.store import runs
from cairn.store.catalog import RecoveryPoint
from cairn.store.cloud_counts import view
from cairn.store.repository import Repository


def freed_by(repo: Repository, points: Iterable[RecoveryPoint]) -> int | None:
    """Stored bytes deleting ``points`` together would free now; None when it cannot be
    known: a block map they need is damaged (a delete then recounts), or a cloud cache
    does not know the size of a chunk it did not send."""
    points = list(points)
    with view(repo, {p.volume_id for p in points}):  # a cloud cache: `cloud_counts`
        return _freed_by(repo, points)


def _freed_by(repo: Repository, points: Iterable[RecoveryPoint]) -> int | None:
    releases: Counter[bytes] = Counter()
    by_volume: dict[int, set[str]] = {}
    for p in points:
        by_volume.setdefault(p.volume_id, set()).add(p.id)
    try:
        for volume_id, doomed in by_volume.items():
            left = repo.catalog.points(volume_id)
            for cur in [p for p in left if p.id in doomed]:
                i = left.index(cur)
                releases += _releases(repo, left, i)
                del left[i]
    except Corruption:
        return None
    return repo.catalog.stored_if_released(releases)


def freed_each(repo: Repository, points: list[RecoveryPoint]) -> dict[str, int | None]:
    """`freed_by` for each of ``points`` alone (each volume's points are read once)."""
    with view(repo, {p.volume_id for p in points}):
        return _freed_each(repo, points)


def _freed_each(repo: Repository, points: list[RecoveryPoint]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    volumes: dict[int, tuple[list[RecoveryPoint], dict[str, int]]] = {}
    for p in points:
        if p.volume_id not in volumes:
            order = repo.catalog.points(p.volume_id)
            volumes[p.volume_id] = order, {q.id: i for i, q in enumerate(order)}
        order, where = volumes[p.volume_id]
        try:
            releases = _releases(repo, order, where[p.id])
        except (Corruption, KeyError):
            out[p.id] = None
            continue
        out[p.id] = repo.catalog.stored_if_released(releases)
    return out


def _releases(repo: Repository, order: list[RecoveryPoint], i: int) -> Counter[bytes]:
    """The runs deleting ``order[i]`` ends, between its neighbours in ``order``."""
    prev = order[i - 1] if i > 0 else None
    nxt = order[i + 1] if i + 1 < len(order) else None
    return runs.delete_decrements(repo.nodes, repo.tree(prev) if prev else None,
                                  repo.tree(order[i]), repo.tree(nxt) if nxt else None)
