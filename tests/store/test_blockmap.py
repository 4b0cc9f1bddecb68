"""Unit tests of the block map: building, sharing subtrees, reading slots, diffing."""

from __future__ import annotations

import hashlib

from cairn.store.blockmap import FANOUT, LEVELS, NodeCache, Tree, build, diff
from cairn.store.chunks import ZERO

BLOCKS = 3 * FANOUT + 7  # four leaf nodes under one level-2 node, the last one partial


def h(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(8, "little", signed=True)).digest()


class Nodes:
    """Interior nodes kept in a dict, as the chunk store keeps them."""

    def __init__(self) -> None:
        self.stored: dict[bytes, bytes] = {}
        self.cache = NodeCache(self.stored.__getitem__)

    def hash_node(self, node: bytes) -> bytes:
        digest = hashlib.sha256(node).digest()
        self.stored[digest] = node
        return digest

    def build(self, parent: Tree | None, blocks: int, changed: dict[int, bytes]) -> Tree:
        tree, new = build(self.cache, self.hash_node, parent, blocks, changed)
        for digest, node in new:
            self.stored[digest] = node
        return tree


def test_a_new_tree_reads_back_every_block_and_counts_its_slots() -> None:
    nodes = Nodes()
    blocks = {i: h(i) for i in range(BLOCKS)}
    tree = nodes.build(None, BLOCKS, blocks)
    assert tree.width(0) == BLOCKS and tree.width(1) == 4 and tree.width(LEVELS) == 1
    assert tree.child_count(1, 3) == 7 and tree.child_count(2, 0) == 4
    assert list(nodes.cache.leaves(tree, 0, BLOCKS)) == sorted(blocks.items())
    assert nodes.cache.slot(tree, 0, FANOUT + 5) == h(FANOUT + 5)


def test_an_all_zero_volume_is_one_zero_root() -> None:
    nodes = Nodes()
    tree = nodes.build(None, BLOCKS, dict.fromkeys(range(BLOCKS), ZERO))
    assert tree.root == ZERO and not nodes.stored
    assert nodes.cache.slot(tree, 0, 9) == ZERO


def test_one_changed_block_rebuilds_only_its_path() -> None:
    nodes = Nodes()
    first = nodes.build(None, BLOCKS, {i: h(i) for i in range(BLOCKS)})
    before = len(nodes.stored)
    second, new = build(nodes.cache, nodes.hash_node, first, BLOCKS, {FANOUT + 1: h(-1)})
    assert len(new) == LEVELS  # the leaf node, its parents, the root
    assert len(nodes.stored) == before + LEVELS
    for leaf in (0, 2, 3):  # the other leaf nodes are the parent's, shared
        assert nodes.cache.slot(second, 1, leaf) == nodes.cache.slot(first, 1, leaf)
    assert nodes.cache.slot(second, 0, FANOUT + 1) == h(-1)


def test_diff_yields_exactly_the_slots_that_differ() -> None:
    nodes = Nodes()
    first = nodes.build(None, BLOCKS, {i: h(i) for i in range(BLOCKS)})
    second = nodes.build(first, BLOCKS, {5: h(-5), 3 * FANOUT: h(-6)})
    changed = {slot: (a, b) for slot, a, b in diff(nodes.cache, first, second)}
    assert changed[(0, 5)] == (h(5), h(-5)) and changed[(0, 3 * FANOUT)] == (h(3 * FANOUT), h(-6))
    assert set(changed) == {(0, 5), (0, 3 * FANOUT), (1, 0), (1, 3), (2, 0), (3, 0), (4, 0)}
    assert list(diff(nodes.cache, second, second)) == []
    assert {s for s, a, _ in diff(nodes.cache, None, first) if a is None} >= {(4, 0), (0, 0)}
