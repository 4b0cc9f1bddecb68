"""Unit tests of the catalog: points in order, sessions and pins, counts, freeing, clones."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.store.catalog import Catalog, ChunkTotals, RecoveryPoint


def h(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    catalog = Catalog.create(tmp_path / "catalog.db")
    try:
        yield catalog
    finally:
        catalog.close()


def point(catalog: Catalog, point_id: str, created: float, root: str = "r") -> RecoveryPoint:
    volume = catalog.ensure_volume("v")
    return RecoveryPoint(point_id, "v", volume.id, 0, created, 4096, h(root), 4096, 4096, 10,
                         0.1, "test")


def commit(catalog: Catalog, p: RecoveryPoint, counts: dict[str, int],
           append: bool = True) -> None:
    session = catalog.open_session(p.volume_id)
    catalog.pin(session, [h(c) for c in counts])
    catalog.commit_point(session, p, Counter({h(c): n for c, n in counts.items()}),
                         {h(c): (4096, 100) for c in counts}, append)


def test_points_keep_their_order_and_late_arrivals_slot_in(catalog: Catalog) -> None:
    commit(catalog, point(catalog, "aaaa01", 100.0), {"x": 1})
    commit(catalog, point(catalog, "aaaa03", 300.0), {"x": 0})
    commit(catalog, point(catalog, "aaaa02", 200.0), {}, append=False)
    assert [p.id for p in catalog.points()] == ["aaaa01", "aaaa02", "aaaa03"]
    middle = catalog.point("aaaa02")
    assert middle is not None
    prev, nxt = catalog.neighbours(middle)
    assert (prev and prev.id, nxt and nxt.id) == ("aaaa01", "aaaa03")
    latest = catalog.latest(middle.volume_id)
    assert latest is not None and latest.id == "aaaa03"
    assert catalog.points_with_prefix("aaaa0") == ["aaaa01", "aaaa02", "aaaa03"]
    assert catalog.volume_totals() == {"v": (3, 30)}


def test_a_new_backup_goes_last_even_when_the_clock_went_back(catalog: Catalog) -> None:
    commit(catalog, point(catalog, "late01", 500.0), {})
    commit(catalog, point(catalog, "early1", 100.0), {})
    assert [p.id for p in catalog.points()][-1] == "late01"  # by time in the listing
    volume = catalog.volume("v")
    assert volume is not None
    latest = catalog.latest(volume.id)
    assert latest is not None and latest.id == "early1"  # but last in its volume


def test_deleting_frees_only_what_no_run_and_no_pin_holds(catalog: Catalog) -> None:
    first = point(catalog, "p1", 1.0)
    commit(catalog, first, {"a": 1, "b": 1})
    commit(catalog, point(catalog, "p2", 2.0), {"a": 1})
    assert catalog.chunk_refs() == {h("a"): 2, h("b"): 1}
    session = catalog.open_session(first.volume_id)
    assert catalog.pin(session, [h("b"), h("new")]) == {h("b")}
    catalog.delete_point(first, Counter({h("a"): 1, h("b"): 1}))
    assert catalog.pending_free() == [] and catalog.chunk_refs() == {h("a"): 1, h("b"): 0}
    assert catalog.unclaimed_pins(session) == [h("new")]
    catalog.abandon_session(session)  # what it wrote alone goes too
    freed = sorted([h("b"), h("new")])
    assert sorted(catalog.pending_free()) == freed
    assert sorted(catalog.still_free(freed)) == freed
    catalog.forget_pending(freed)
    assert catalog.pending_free() == []
    assert catalog.chunk_totals() == ChunkTotals(1, 4096, 100, 0, 0)
    assert catalog.integrity_check() == "ok"


def test_a_killed_backup_leaves_a_session_the_next_writer_finds(catalog: Catalog) -> None:
    volume = catalog.ensure_volume("v")
    session = catalog.open_session(volume.id)
    catalog.pin(session, [h("orphan")])
    assert catalog.dead_sessions(volume.id) == [session]
    assert catalog.pinned() == [h("orphan")]
    catalog.abandon_session(session)
    assert catalog.dead_sessions(volume.id) == [] and catalog.pinned() == []


def test_recount_sets_counts_and_queues_what_dropped_out(catalog: Catalog) -> None:
    commit(catalog, point(catalog, "p1", 1.0), {"a": 1, "b": 1})
    catalog.recount(Counter({h("a"): 3}))
    assert catalog.chunk_refs() == {h("a"): 3}
    assert catalog.pending_free() == [h("b")]


def test_clones(catalog: Catalog) -> None:
    commit(catalog, point(catalog, "p1", 1.0), {})
    assert catalog.add_clone("c1", "p1", 5.0)
    assert not catalog.add_clone("c1", "p1", 6.0)
    assert catalog.clones() == [("c1", "p1", 5.0)] == catalog.clones(point_id="p1")
    assert catalog.clones(name="nope") == []
    catalog.remove_clone("c1")
    assert catalog.clones() == []


def test_chunk_sizes_are_those_committed_and_unknown_ones_are_left_out(
        catalog: Catalog) -> None:
    commit(catalog, point(catalog, "p1", 1.0), {"a": 1, "b": 1})
    catalog.recount(Counter({h("a"): 1, h("b"): 1, h("c"): 1}))  # "c": sizes unknown
    assert catalog.chunk_sizes([h("a"), h("c"), h("gone")]) == {h("a"): (4096, 100)}
