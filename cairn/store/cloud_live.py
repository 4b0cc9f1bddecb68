"""The chunks a cloud prune must keep, carried from one prune to the next: each block map of
another appliance's volume is walked once per node, not once per prune.

A cloud cache counts runs only for the volumes it writes (`cloud_counts`): the points of the
others enter it by their records alone. A prune needs every chunk every point reaches, so
it counted those volumes too, inside `cloud_counts.view`, and rolled the counts back: every
prune walked every point of every other appliance again (a fresh node read all their block
maps from the bucket, one GET per node in turn). Here those counts are kept instead, in two
tables of the cache's catalog that only prunes write (prunes run one at a time, under the
prune lock):

- ``cloud_live_points``: per uncounted volume, the points its counts were last made from,
  each by its id and block map (a point record is immutable: same id, same tree);
- ``cloud_live_runs``: per such volume, each chunk's runs over those points (`runs`).

At each prune the points the catalog holds for each uncounted volume are compared with
those: a volume whose points did not change costs nothing; a point that went is taken out
and one that came is put in (`runs.delete_decrements` with its neighbours, either way:
putting a point between two others adds exactly what taking it out again would remove);
a volume that changed by more than half of its points is walked afresh. Only those walks
read block maps, on a few threads at once (network-bound the first time), and before the
catalog's write lock is taken; under it the changes are checked against the catalog again
and done anew for any volume a sync changed meanwhile.

Why this keeps what the prune promises (no chunk a listed point needs is taken as dead): a
chunk's run count over a volume's points is positive exactly when one of them reaches it,
and the counts here are the catalog's own rules applied to the very list of points the
catalog holds when the live set is read, in the same transaction. A count below zero means
the tables went wrong (a bug, a hand edit): that volume is walked afresh. A volume the cache
counts now (a writer settled it) or no longer holds loses its rows here: the catalog's own
counts hold its chunks then.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cairn.store import runs
from cairn.store.blockmap import LEVELS, NodeCache, Tree, split
from cairn.store.chunks import ZERO
from cairn.store.cloud_counts import uncounted
from cairn.store.parallel import bounded_map
from cairn.store.phases import Progress, phase

if TYPE_CHECKING:
    from cairn.store.repository import Repository

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cloud_live_points(volume_id INTEGER NOT NULL, seq INTEGER NOT NULL,
    point_id TEXT NOT NULL, root BLOB NOT NULL, blocks INTEGER NOT NULL,
    PRIMARY KEY(volume_id, seq, point_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cloud_live_runs(volume_id INTEGER NOT NULL, hash BLOB NOT NULL,
    refs INTEGER NOT NULL, PRIMARY KEY(volume_id, hash)) WITHOUT ROWID
"""
WALKERS = 8
"""volumes walked at once: the first walk of a node reads block maps from the bucket"""

Entry = tuple[int, str, bytes, int]
"""a point as counted: (seq, id, root, blocks), in the order the counts follow"""


def _tree(entry: Entry) -> Tree:
    return Tree(entry[2], entry[3])


@dataclass
class _Change:
    """What one volume's counts become: ``counts`` added to them, or replacing them."""

    volume_id: int
    before: list[Entry]
    after: list[Entry]
    counts: Counter[bytes] = field(default_factory=Counter)
    afresh: bool = False


def walk(nodes: NodeCache, entries: list[Entry]) -> Counter[bytes]:
    """The runs of ``entries``, from scratch."""
    counts: Counter[bytes] = Counter()
    prev = None
    for entry in entries:
        tree = _tree(entry)
        counts.update(runs.ingest_increments(nodes, prev, tree))
        prev = tree
    return counts


def patch(nodes: NodeCache, before: list[Entry], after: list[Entry]) -> Counter[bytes]:
    """How the runs of ``before`` change into those of ``after`` (both in order): each
    point that went taken out between its neighbours, then each that came put in."""
    counts: Counter[bytes] = Counter()
    kept = set(after)
    chain = list(before)
    for entry in [e for e in before if e not in kept]:
        i = chain.index(entry)
        prev = _tree(chain[i - 1]) if i else None
        nxt = _tree(chain[i + 1]) if i + 1 < len(chain) else None
        counts.subtract(runs.delete_decrements(nodes, prev, _tree(entry), nxt))
        del chain[i]
    old = set(chain)
    done: list[Entry] = []
    for k, entry in enumerate(after):
        if entry not in old:
            nxt = next((e for e in after[k + 1:] if e in old), None)
            counts.update(runs.delete_decrements(
                nodes, _tree(done[-1]) if done else None, _tree(entry),
                _tree(nxt) if nxt is not None else None))
        done.append(entry)
    return counts


def _prefetch(repo: Repository, changes: list[_Change]) -> None:
    """Bring the block maps the walks will read to local disk first, a level at a time,
    each level in one batch of ranged reads (`NodeFiles.load`): a node's first prune walks
    every point of every other appliance, and one GET per node, as the walk meets it, took
    seconds. A node already on disk was read with its subtree: nothing below it is read.
    Only an optimisation: the walks read whatever this missed, one by one."""
    files = getattr(repo.remote, "node_files", None)
    if files is None:
        return
    frontier = {e[2] for c in changes for e in c.after if c.afresh or e not in c.before}
    for level in range(LEVELS, 0, -1):
        fetched = files.load(sorted(frontier - {ZERO}))
        if level == 1:
            break
        frontier = {kid for node in fetched for kid in split(node)}


def _choose(change: _Change) -> _Change:
    """Patched when few points changed, else walked afresh."""
    moved = len(set(change.before) ^ set(change.after))
    change.afresh = not change.before or 2 * moved >= len(change.after)
    return change


def _plan(nodes: NodeCache, change: _Change) -> _Change:
    """Fill in ``change``'s counts."""
    _choose(change)
    change.counts = (walk(nodes, change.after) if change.afresh
                     else patch(nodes, change.before, change.after))
    return change


def chains(repo: Repository, volume_ids: set[int]) -> dict[int, list[Entry]]:
    """The points the catalog holds now for each of ``volume_ids``, in counting order (one
    query: at ten thousand points, building each `RecoveryPoint` cost half a second)."""
    found: dict[int, list[Entry]] = {v: [] for v in volume_ids}
    block = repo.block_size
    for volume_id, seq, point_id, root, size in repo.catalog.db.execute(
            "SELECT volume_id, seq, id, root, size FROM points"):
        if volume_id in found:
            found[volume_id].append((seq, point_id, root, -(-size // block)))
    for entries in found.values():
        entries.sort()
    return found


def _counted(repo: Repository) -> dict[int, list[Entry]]:
    """The points the kept counts were made from, per volume."""
    found: dict[int, list[Entry]] = {}
    for volume_id, *entry in repo.catalog.db.execute(
            "SELECT volume_id, seq, point_id, root, blocks FROM cloud_live_points "
            "ORDER BY volume_id, seq, point_id"):
        found.setdefault(volume_id, []).append(tuple(entry))  # type: ignore[arg-type]
    return found


def _changes(repo: Repository) -> tuple[list[_Change], set[int]]:
    """Each uncounted volume whose points changed since the counts were made, and the
    volumes whose counts go (counted now, or gone)."""
    todo = uncounted(repo)
    now, then = chains(repo, todo), _counted(repo)
    changes = [_Change(v, then.get(v, []), entries) for v, entries in sorted(now.items())
               if then.get(v, []) != entries]
    return changes, set(then) - todo


def _write(repo: Repository, change: _Change) -> bool:
    """Store one volume's change (inside the caller's transaction); False when a count
    would fall below zero (nothing written then: the caller walks it afresh)."""
    db, volume = repo.catalog.db, change.volume_id
    if change.afresh:
        db.execute("DELETE FROM cloud_live_runs WHERE volume_id=?", (volume,))
    db.executemany("INSERT INTO cloud_live_runs(volume_id, hash, refs) VALUES(?, ?, ?) "
                   "ON CONFLICT(volume_id, hash) DO UPDATE SET refs = refs + excluded.refs",
                   ((volume, h, n) for h, n in change.counts.items() if n))
    if db.execute("SELECT 1 FROM cloud_live_runs WHERE volume_id=? AND refs < 0 LIMIT 1",
                  (volume,)).fetchone():
        db.execute("ROLLBACK TO cloud_live_volume")
        return False
    db.execute("DELETE FROM cloud_live_runs WHERE volume_id=? AND refs = 0", (volume,))
    db.execute("DELETE FROM cloud_live_points WHERE volume_id=?", (volume,))
    db.executemany("INSERT INTO cloud_live_points(volume_id, seq, point_id, root, blocks) "
                   "VALUES(?, ?, ?, ?, ?)", ((volume, *e) for e in change.after))
    return True


def _store(repo: Repository, change: _Change) -> None:
    db = repo.catalog.db
    db.execute("SAVEPOINT cloud_live_volume")
    if not _write(repo, change):
        change.afresh, change.counts = True, walk(repo.nodes, change.after)
        _write(repo, change)
    db.execute("RELEASE cloud_live_volume")


def _drop(repo: Repository, volume_ids: Iterable[int]) -> None:
    for table in ("cloud_live_runs", "cloud_live_points"):
        repo.catalog.db.executemany(f"DELETE FROM {table} WHERE volume_id=?",
                                    ((v,) for v in volume_ids))


def live(repo: Repository, progress: Progress | None = None) -> set[bytes]:
    """Every chunk a point of this cache reaches: the catalog's counts of the volumes it
    counts, and the kept counts of the others, brought up to date first (``progress`` is
    told each volume counted)."""
    repo.catalog.ensure_schema(_SCHEMA)
    changes, _gone = _changes(repo)
    _prefetch(repo, [_choose(c) for c in changes])
    planned = {}
    with phase(progress, len(changes), "volumes whose points changed, counted") as advance:
        for change in bounded_map(lambda c: _plan(repo.nodes, c), changes, WALKERS):
            planned[change.volume_id] = change
            advance(1)
    with repo.catalog.transaction() as db:
        changes, gone = _changes(repo)
        for change in changes:
            ready = planned.get(change.volume_id)
            if ready is None or (ready.before, ready.after) != (change.before, change.after):
                ready = _plan(repo.nodes, change)  # a sync changed it meanwhile
            _store(repo, ready)
        _drop(repo, gone)
        return {row[0] for row in db.execute(
            "SELECT hash FROM chunks WHERE refs > 0 UNION SELECT hash FROM cloud_live_runs")}
