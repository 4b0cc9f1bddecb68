"""Extent-map diffing on synthetic maps: what counts as changed."""

from __future__ import annotations

from cairn.sources.extents import EXTENT_UNWRITTEN, Extent, changed_ranges, data_ranges


def test_same_physical_is_unchanged_and_moved_is_changed() -> None:
    old = [Extent(0, 1000, 8192, 0), Extent(8192, 50_000, 4096, 0)]
    new = [Extent(0, 1000, 4096, 0), Extent(4096, 9000, 4096, 0), Extent(8192, 50_000, 4096, 0)]
    assert changed_ranges(old, new, 12288) == [(4096, 4096)]


def test_holes_and_unwritten_read_as_zeros() -> None:
    old = [Extent(0, 1000, 4096, 0)]
    new = [Extent(0, 1000, 4096, 0), Extent(8192, 7000, 4096, EXTENT_UNWRITTEN),
           Extent(16384, 8000, 4096, 0)]
    assert changed_ranges(old, new, 32768) == [(16384, 4096)]
    assert changed_ranges(new, old, 32768) == [(16384, 4096)]
    assert data_ranges(new, 32768) == [(0, 4096), (16384, 4096)]
