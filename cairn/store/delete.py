"""Deleting points: local, cheap, and never touching another point.

Each deleted point is removed in its own catalog transaction together with the reference
changes its removal causes (`runs.delete_decrements`); chunks that lose their last run are
unlinked after the commit by `Repository.reclaim`. A crash between the two leaves them queued
in ``pending_free``, so space is never leaked and nothing committed is ever lost.

This is the one path that really deletes, so it is where locks are enforced (`marks`): a
locked point is refused before anything is deleted, whoever asks. `cairn delete` normally
only *holds* points (`marks.hold`); `purge_expired` brings held points whose window passed
here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack

from cairn.errors import Corruption
from cairn.store import marks, runs
from cairn.store.catalog import RecoveryPoint
from cairn.store.clones import list_clones, refuse_if_cloned
from cairn.store.cloud_counts import uncounted
from cairn.store.pins import exclusive, in_use
from cairn.store.repository import Repository, tolerant_nodes


def delete_points(repo: Repository, points: Iterable[RecoveryPoint]) -> int:
    """Delete ``points`` (any volumes, any order); returns the number of chunks freed.

    A point in use (exported, booted: `pins`), with clones or with a lock is refused
    before anything is deleted: a clone reads its point, and a lock is a promise. Pins are
    waited for up to ``repo.lock_wait`` seconds, and a refusal names the use.
    """
    points = list(points)
    marks.refuse_if_locked(repo, points)
    with ExitStack() as unpinned:
        for p in points:
            unpinned.enter_context(exclusive(repo, p))
        return _delete_unpinned(repo, points)


def _delete_unpinned(repo: Repository, points: list[RecoveryPoint]) -> int:
    by_volume: dict[str, list[RecoveryPoint]] = {}
    for p in points:
        refuse_if_cloned(repo, p)
        by_volume.setdefault(p.volume, []).append(p)
    freed = 0
    for name, group in by_volume.items():
        volume = repo.volume(name)
        with repo.volume_lock(volume):
            repo.recover(volume)
            for stale in group:
                with repo.catalog.transaction():
                    point = repo.catalog.point(stale.id)
                    if point is None:
                        continue
                    _delete_one(repo, point)
            freed += repo.reclaim()
    return freed


def _delete_one(repo: Repository, point: RecoveryPoint) -> None:
    """Delete ``point`` inside the caller's transaction.

    Where a block map the delete must walk is damaged, the runs it ends cannot be known
    exactly; then the point is dropped and every count recomputed from the points left,
    walking past damaged nodes (`tolerant_nodes`). That never undercounts a chunk an
    intact point reads, since an intact point reaches each of its chunks through nodes that
    read; what only damaged nodes led to is freed, being unreachable anyway.
    """
    if point.volume_id in uncounted(repo):  # a cloud cache counts no runs there
        repo.unpublish(point)
        repo.catalog.delete_point(point, Counter())
        return
    prev, nxt = repo.catalog.neighbours(point)
    try:
        decrements = runs.delete_decrements(
            repo.nodes,
            repo.tree(prev) if prev else None,
            repo.tree(point),
            repo.tree(nxt) if nxt else None,
        )
    except Corruption:
        decrements = None
    repo.unpublish(point)
    if decrements is not None:
        repo.catalog.delete_point(point, decrements)
        return
    from cairn.store.verify import expected_refs  # damage only: verify is a large module

    repo.catalog.forget_points([point.id])
    repo.catalog.recount(expected_refs(repo, tolerant_nodes(repo)))


def purge_expired(repo: Repository) -> int:
    """Really delete the held points whose deletion window has passed; chunks freed.
    A point still exported or booted (`pins`), or cloned while held, waits for a later
    purge (a refusal here would fail every write command after it)."""
    due = [p for p in marks.expired(repo) if not in_use(repo, p) and not list_clones(repo, p.id)]
    return delete_points(repo, due) if due else 0
