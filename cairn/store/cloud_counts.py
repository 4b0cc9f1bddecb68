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

``held_chunks`` thus answers only for chunks a counted point holds: a writer asks the packs'
indexes about the others (`replicate._plan`), as it already did for chunks no point of the
cache held. A cache made before this module counted every volume it knew, and went on
counting them (reading every block map they gained at its syncs): `migrate`, on opening,
drops its counts once, every volume uncounted, as if the cache were new; a writer counts
its own volumes again at its next write (`settle`).
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
_FORMAT = "cloud_counts_format"
"""present once a cache counts only the volumes it writes (`migrate`)"""
_VIEWING: set[int] = set()
"""catalogs (by id) inside a `view`: a nested one counts nothing again"""


def _exists(repo: Repository, table: str = _TABLE) -> bool:
    return repo.catalog.db.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() \
        is not None


def migrate(repo: Repository) -> bool:
    """Make a cloud cache count only the volumes it writes; True when it dropped the counts
    of a cache made before (every volume it knew counted). Run on opening, before the
    first sync: once done, a table says so and this writes nothing."""
    if _exists(repo, _FORMAT):
        return False
    repo.catalog.ensure_schema(_SCHEMA)
    with repo.catalog.transaction() as db:
        if _exists(repo, _FORMAT):
            return False  # another process sharing the cache did it meanwhile
        db.execute(f"CREATE TABLE {_FORMAT}(version INTEGER NOT NULL)")
        db.execute(f"INSERT INTO {_FORMAT}(version) VALUES(1)")
        volumes = [row[0] for row in db.execute("SELECT id FROM volumes")]
        db.executemany(f"INSERT OR IGNORE INTO {_TABLE}(volume_id) VALUES(?)",
                       ((v,) for v in volumes))
        if volumes:
            repo.catalog.recount(Counter())
    return bool(volumes)


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


_Walk = tuple[dict[int, list[str]], Counter[bytes]]
"""the point ids of each volume walked, and their runs"""


def _walk(repo: Repository, volume_ids: set[int]) -> _Walk:
    """The runs of every point of ``volume_ids``: each point's change from the one before.
    Their block maps are read here, from the bucket the first time (`cloud.NodeFiles`)."""
    counts: Counter[bytes] = Counter()
    seen: dict[int, list[str]] = {}
    for volume_id in sorted(volume_ids):
        prev = None
        points = repo.catalog.points(volume_id)
        seen[volume_id] = [p.id for p in points]
        for point in points:
            tree = repo.tree(point)
            counts.update(runs.ingest_increments(repo.nodes, prev, tree))
            prev = tree
    return seen, counts


def _todo(repo: Repository, volume_ids: Iterable[int] | None) -> set[int]:
    todo = uncounted(repo)
    return todo if volume_ids is None else todo & set(volume_ids)


def _count(repo: Repository, todo: set[int], walked: _Walk) -> None:
    """Under the write lock: add the runs ``walked`` found (walked again, from the nodes now
    on local disk, if a sync changed those volumes since) and count those volumes."""
    seen, counts = walked
    if any([p.id for p in repo.catalog.points(v)] != seen.get(v) for v in todo):
        seen, counts = _walk(repo, todo)
    with repo.catalog.transaction() as db:
        repo.catalog.add_runs(counts)
        db.executemany(f"DELETE FROM {_TABLE} WHERE volume_id = ?", ((v,) for v in todo))
    learn = getattr(repo.remote, "learn_sizes", None)
    if learn is not None:
        learn(repo)


def settle(repo: Repository, volume_ids: Iterable[int] | None = None) -> None:
    """Count the runs of ``volume_ids`` (every uncounted volume when None) from now on:
    what a writer does before it adds runs to one. Their block maps are read before the
    catalog's write lock is taken (unless the caller holds it): a walk of many points
    reading from the bucket must not keep other processes sharing the cache waiting."""
    todo = _todo(repo, volume_ids)
    if not todo:
        return
    walked = _walk(repo, todo)
    with repo.catalog.transaction():
        todo = _todo(repo, volume_ids)
        if todo:
            _count(repo, todo, walked)


@contextmanager
def view(repo: Repository, volume_ids: Iterable[int] | None = None) -> Iterator[None]:
    """Within it, the catalog counts ``volume_ids`` (every volume when None) too: the
    block maps of the uncounted ones are read (before the write lock is taken); on
    leaving, what it counted is rolled back. Holds the catalog's write lock meanwhile.
    Nested, or with nothing to count, it does nothing."""
    key = id(repo.catalog)
    todo = _todo(repo, volume_ids)
    if key in _VIEWING or not todo:
        yield
        return
    walked = _walk(repo, todo)
    with repo.catalog.transaction() as db:
        db.execute("SAVEPOINT cloud_counts_view")
        _VIEWING.add(key)
        try:
            todo = _todo(repo, volume_ids)
            if todo:
                _count(repo, todo, walked)
            yield
        finally:
            _VIEWING.discard(key)
            db.execute("ROLLBACK TO cloud_counts_view")
            db.execute("RELEASE cloud_counts_view")
