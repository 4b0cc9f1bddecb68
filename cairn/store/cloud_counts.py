"""Which volumes a cloud cache counts runs for: block maps read only when something needs them.

A local repository counts every chunk's runs (`runs`) as points come and go. A cloud cache
did the same for every point it learnt from the bucket, which meant reading the block map
of every point any appliance published (about 4.7 GETs a point, at every node): with a
thousand appliances on one repository, over a billion GETs a day for counts that no node
needs most of the time. Nothing that keeps the bucket safe reads them either: the prune
computes what is live from a full listing of its own (`cloud_prune`), and a writer takes a
chunk as present in the bucket from the packs' indexes (`cloud_packs`), less the condemned.

So a cache counts only the volumes it writes. A volume first learnt from the bucket is
*uncounted*: its points enter the catalog from their records alone (listed, restorable,
cloneable: a restore reads the block map it walks, on demand), and its runs are in no
chunk's count. The reference counts are then the runs of the counted volumes only, which is
what the catalog's own rules (`delete`, `verify.expected_refs`) keep exact:

- a point of an uncounted volume is added and deleted with no change of counts;
- a writer about to add runs to an uncounted volume (a replication, a backup straight into
  the bucket) counts it first, for good (`settle`): its block maps are read once;
- what needs every count (stats, verify, the prune's live set) counts the uncounted
  volumes inside `view`, a savepoint rolled back after, so the node goes on reading no
  block maps at its syncs. What deleting some points would free (`space.freed_by`) counts
  only their own volumes so: a chunk they share with a volume the cache does not count is
  taken as freed (an upper bound; a cloud delete frees nothing itself, the prune does).

``has_chunk`` thus answers only for chunks a counted point holds: a writer asks the packs'
indexes about the others (`replicate._plan`), as it already did for chunks no point of the
cache held. A cache made before this module counts every volume it knows, as before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from cairn.store import runs
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository

_TABLE = "cloud_uncounted"
_SCHEMA = f"CREATE TABLE IF NOT EXISTS {_TABLE}(volume_id INTEGER PRIMARY KEY)"
_VIEWING: set[int] = set()
"""catalogs (by id) inside a `view`: a nested one counts nothing again"""


def _exists(repo: Repository) -> bool:
    return repo.catalog.db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (_TABLE,)).fetchone() \
        is not None


def uncounted(repo: Repository) -> set[int]:
    """Ids of the volumes whose runs this catalog does not count (none locally)."""
    if not _exists(repo):
        return set()
    return {r[0] for r in repo.catalog.db.execute(f"SELECT volume_id FROM {_TABLE}")}


def add_record(repo: Repository, point: RecoveryPoint) -> RecoveryPoint | None:
    """Add a point learnt from the bucket by its record alone, when its volume is new to
    this cache or uncounted (the volume then stays uncounted); None when the volume is
    counted (the caller counts the point's runs)."""
    repo.catalog.ensure_schema(_SCHEMA)
    with repo.catalog.transaction() as db:
        volume = repo.catalog.volume(point.volume)
        if volume is None:
            volume = repo.catalog.ensure_volume(point.volume)
            db.execute(f"INSERT OR IGNORE INTO {_TABLE}(volume_id) VALUES(?)", (volume.id,))
        elif volume.id not in uncounted(repo):
            return None
        committed = repo.catalog.point(point.id)
        if committed is None:
            placed = RecoveryPoint(**{**point.__dict__, "volume_id": volume.id,
                                      "seq": int(point.created * 1_000_000)})
            repo.catalog.commit_point(None, placed, Counter(), {}, append=False)
            committed = repo.catalog.point(point.id)
    assert committed is not None
    return committed


def _chain_runs(repo: Repository, volume_ids: Iterable[int]) -> Counter[bytes]:
    """The runs of every point of ``volume_ids``: each point's change from the one before."""
    counts: Counter[bytes] = Counter()
    for volume_id in volume_ids:
        prev = None
        for point in repo.catalog.points(volume_id):
            tree = repo.tree(point)
            counts.update(runs.ingest_increments(repo.nodes, prev, tree))
            prev = tree
    return counts


def settle(repo: Repository, volume_ids: Iterable[int] | None = None) -> None:
    """Count the runs of ``volume_ids`` (every uncounted volume when None) from now on:
    what a writer does before it adds runs to one. Reads their block maps."""
    with repo.catalog.transaction() as db:
        todo = uncounted(repo)
        if volume_ids is not None:
            todo &= set(volume_ids)
        if not todo:
            return
        repo.catalog.add_runs(_chain_runs(repo, sorted(todo)))
        db.executemany(f"DELETE FROM {_TABLE} WHERE volume_id = ?", ((v,) for v in todo))
        learn = getattr(repo.remote, "learn_sizes", None)
        if learn is not None:
            learn(repo)


@contextmanager
def view(repo: Repository, volume_ids: Iterable[int] | None = None) -> Iterator[None]:
    """Within it, the catalog counts ``volume_ids`` (every volume when None) too: the
    block maps of the uncounted ones are read; on leaving, what it counted is rolled back.
    Holds the catalog's write lock meanwhile. Nested, or with nothing to count, it does
    nothing."""
    key = id(repo.catalog)
    todo = uncounted(repo) if volume_ids is None else uncounted(repo) & set(volume_ids)
    if key in _VIEWING or not todo:
        yield
        return
    with repo.catalog.transaction() as db:
        db.execute("SAVEPOINT cloud_counts_view")
        _VIEWING.add(key)
        try:
            settle(repo, todo)
            yield
        finally:
            _VIEWING.discard(key)
            db.execute("ROLLBACK TO cloud_counts_view")
            db.execute("RELEASE cloud_counts_view")
