"""The blocks an incremental backup reads come from its changed ranges one at a time, in
order and each once, against a model that gathers them in a set."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.store.ingest import blocks_of_ranges

RANGES = st.lists(st.tuples(st.integers(0, 5000), st.integers(-2, 3000)), max_size=10)


@settings(max_examples=300, deadline=None)
@given(ranges=RANGES, size=st.integers(1, 6000), shift=st.integers(9, 11))
def test_blocks_of_ranges_are_each_touched_block_once_in_order(
        ranges: list[tuple[int, int]], size: int, shift: int) -> None:
    bs = 1 << shift
    touched = {b for o, n in ranges if n > 0
               for b in range(o // bs, min(o + n - 1, size - 1) // bs + 1)}
    assert list(blocks_of_ranges(ranges, bs, size)) == sorted(touched)


def test_a_whole_volume_of_ranges_is_generated_not_gathered() -> None:
    blocks = blocks_of_ranges([(0, 1 << 50)], 1 << 16, 1 << 50)
    assert [next(blocks) for _ in range(3)] == [0, 1, 2]
