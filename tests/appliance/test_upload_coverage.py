"""A commit's coverage check streams the frame records: pages of the database, joined
ranges as they come, and the gaps between them, against a model of single bytes."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.appliance.spool import coalesce, merge, uncovered
from cairn.appliance.state import State

RANGES = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)), max_size=12)


def as_bytes(ranges: list[tuple[int, int]]) -> set[int]:
    return {b for o, n in ranges for b in range(o, o + n)}


@settings(max_examples=300, deadline=None)
@given(wanted=RANGES, have=RANGES)
def test_uncovered_is_what_is_wanted_and_not_had(wanted: list[tuple[int, int]],
                                                 have: list[tuple[int, int]]) -> None:
    missing = list(uncovered(merge(wanted), coalesce(sorted(have))))
    assert as_bytes(missing) == as_bytes(wanted) - as_bytes(have)
    assert missing == merge(missing)  # sorted, disjoint, never empty pieces
    assert sum(n for _, n in missing) == len(as_bytes(missing))


def test_received_ranges_read_every_record_in_order_across_pages(tmp_path: Path) -> None:
    state = State(tmp_path / "appliance.db")
    frames = [(o, n, bytes(32)) for o, n in ((40, 5), (0, 10), (10, 10), (40, 2), (70, 1))]
    state.add_received("u1", frames)
    state.add_received("u2", [(0, 100, bytes(32))])
    for page in (1, 2, 3, 10_000):
        assert list(state.received_ranges("u1", page=page)) == sorted(
            (o, n) for o, n, _ in frames)
    assert list(coalesce(state.received_ranges("u1", page=2))) == [(0, 20), (40, 5), (70, 1)]
