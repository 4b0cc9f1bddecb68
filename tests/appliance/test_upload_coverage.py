"""A commit's coverage check streams the frame records: pages of the database, joined
ranges as they come, and the gaps between them, against a model of single bytes."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.appliance.spool import coalesce, uncovered
from cairn.appliance.state import State
from cairn.errors import UsageError
from cairn.plan import Extents, Ranges, encode

RANGES = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)), max_size=12)


def as_bytes(ranges: list[tuple[int, int]]) -> set[int]:
    return {b for o, n in ranges for b in range(o, o + n)}


@settings(max_examples=300, deadline=None)
@given(wanted=RANGES, have=RANGES)
def test_uncovered_is_what_is_wanted_and_not_had(wanted: list[tuple[int, int]],
                                                 have: list[tuple[int, int]]) -> None:
    merged = Ranges.merged(sorted(wanted))
    assert as_bytes(list(merged)) == as_bytes(wanted)
    assert all(a[0] + a[1] < b[0] for a, b in pairwise(merged))
    missing = list(uncovered(merged, coalesce(sorted(have))))
    assert as_bytes(missing) == as_bytes(wanted) - as_bytes(have)
    assert missing == list(Ranges.merged(missing))  # sorted, disjoint, never empty pieces
    assert sum(n for _, n in missing) == len(as_bytes(missing))


def test_received_ranges_read_every_record_in_order_across_pages(tmp_path: Path) -> None:
    state = State(tmp_path / "appliance.db")
    frames = [(o, n, bytes(32)) for o, n in ((40, 5), (0, 10), (10, 10), (50, 2), (70, 1))]
    state.add_received("u1", frames)
    state.add_received("u2", [(0, 100, bytes(32))])
    for page in (1, 2, 3, 10_000):
        assert list(state.received_ranges("u1", page=page)) == sorted(
            (o, n) for o, n, _ in frames)
    assert list(coalesce(state.received_ranges("u1", page=2))) == [
        (0, 20), (40, 5), (50, 2), (70, 1)]


def test_a_frame_recorded_replaces_the_records_it_overlaps(tmp_path: Path) -> None:
    """Records never overlap, even from one batch: their number stays bounded by the
    volume's size over the minimum frame, whatever frames were sent."""
    state = State(tmp_path / "appliance.db")
    state.add_received("u1", [(0, 10, b"a"), (10, 10, b"b"), (30, 5, b"c")])
    state.add_received("u1", [(5, 10, b"d"), (8, 4, b"e"), (30, 5, b"f")])
    assert state.received("u1") == [(8, 4, b"e"), (30, 5, b"f")]


@given(ranges=st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
                       max_size=20))
def test_a_plan_travels_in_16_bytes_a_range_sorted(ranges: list[tuple[int, int]]) -> None:
    wire = encode(ranges)
    assert len(wire) == 16 * len(ranges)
    assert list(Ranges.parse(wire)) == sorted(ranges)
    assert list(Extents(Ranges.parse(wire))) == [(o, o + n) for o, n in sorted(ranges)]


def test_a_torn_or_unsorted_plan_is_refused() -> None:
    with pytest.raises(UsageError, match="16 bytes per range"):
        Ranges.parse(encode([(0, 1)])[:-1])
    with pytest.raises(UsageError, match="sorted by offset"):
        Ranges.parse(encode([(4096, 1)]) + encode([(0, 1)]))
