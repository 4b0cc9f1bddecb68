"""Unit tests of reference counting by runs, against a brute-force count of runs.

The trees are small-block volumes of four leaf nodes under one level-2 node, so deletes
walk interior nodes with several children, not just a chain of single children.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from cairn.restore.writer import restore_image
from cairn.store import runs
from cairn.store.blockmap import FANOUT, LEVELS, Tree
from cairn.store.chunks import ZERO
from cairn.store.delete import delete_points
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from cairn.store.verify import expected_refs, verify
from tests.store.helpers import backup, make_image
from tests.store.test_blockmap import Nodes, h

BLOCKS = 4 * FANOUT


def _column_hashes(nodes: Nodes, tree: Tree, level: int) -> list[bytes]:
    if level == 0:
        return [digest for _, digest in nodes.cache.leaves(tree, 0, tree.blocks)]
    return [nodes.cache.slot(tree, level, i) for i in range(tree.width(level))]


def brute_force(nodes: Nodes, points: list[Tree]) -> Counter[bytes]:
    """Count every run of every non-zero chunk in every slot of every level, directly."""
    counts: Counter[bytes] = Counter()
    for level in range(LEVELS + 1) if points else ():
        rows = [_column_hashes(nodes, t, level) for t in points]
        for column in zip(*rows, strict=True):
            starts = [column[0], *(b for a, b in pairwise(column) if b != a)]
            counts.update(c for c in starts if c != ZERO)
    return counts


def history(seed: int, count: int) -> tuple[Nodes, list[Tree]]:
    """``count`` points, each changing a few blocks of the one before (and sometimes
    putting an earlier value back, so runs split and merge)."""
    rnd = random.Random(seed)
    nodes = Nodes()
    trees = [nodes.build(None, BLOCKS, {i: h(i % 700) if i % 5 else ZERO
                                        for i in range(BLOCKS)})]
    for _ in range(count - 1):
        changed = {rnd.randrange(BLOCKS): h(rnd.randrange(-3, 0)) for _ in range(rnd.randint(1, 9))}
        trees.append(nodes.build(trees[-1], BLOCKS, changed))
    return nodes, trees


def ingested(nodes: Nodes, trees: list[Tree]) -> Counter[bytes]:
    counts: Counter[bytes] = Counter()
    for parent, tree in zip([None, *trees], trees, strict=False):
        counts.update(runs.ingest_increments(nodes.cache, parent, tree))
    return counts


@pytest.mark.parametrize("seed", range(4))
def test_ingest_counts_every_run(seed: int) -> None:
    nodes, trees = history(seed, 6)
    assert +ingested(nodes, trees) == +brute_force(nodes, trees)


@pytest.mark.parametrize("seed", range(4))
def test_deleting_points_in_any_order_keeps_counts_exact(seed: int) -> None:
    nodes, trees = history(seed, 7)
    counts = ingested(nodes, trees)
    rnd = random.Random(seed)
    while trees:
        i = rnd.randrange(len(trees))
        prev = trees[i - 1] if i else None
        nxt = trees[i + 1] if i + 1 < len(trees) else None
        counts.subtract(runs.delete_decrements(nodes.cache, prev, trees[i], nxt))
        del trees[i]
        assert +counts == +brute_force(nodes, trees), f"seed {seed}, deleted #{i}"
        assert not -counts, "a count went below zero"


def test_each_row_of_the_delete_table() -> None:
    """prev/cur/next in one slot: a b a, a b c, a b b, b b c (see the module docstring)."""
    nodes = Nodes()
    base = {i: h(i) for i in range(BLOCKS)}
    a, b, c = h(-1), h(-2), h(-3)
    mk = [nodes.build(None, BLOCKS, {**base, 9: v}) for v in (a, b, c)]
    ta, tb, tc = mk
    assert runs.delete_decrements(nodes.cache, ta, tb, ta)[a] == 1  # a's runs merge
    assert runs.delete_decrements(nodes.cache, ta, tb, ta)[b] == 1  # b's run vanishes
    assert runs.delete_decrements(nodes.cache, ta, tb, tc)[b] == 1
    assert runs.delete_decrements(nodes.cache, ta, tb, tb)[b] == 0
    assert runs.delete_decrements(nodes.cache, tb, tb, tc) == Counter()
    assert runs.delete_decrements(nodes.cache, None, ta, None)[a] == 1


@pytest.fixture
def small_block_repo(tmp_path: Path) -> Iterator[Repository]:
    """4 KiB blocks: an 8 MiB volume has four leaf nodes under one level-2 node."""
    with Repository.init(tmp_path / "repo", block_size=4096) as repo:
        yield repo


def test_deletes_in_a_small_block_store_keep_counts_and_restores_exact(
        small_block_repo: Repository, tmp_path: Path) -> None:
    repo = small_block_repo
    img = tmp_path / "disk.img"
    data = make_image(img, 8 * 1024 * 1024, seed=7, fill=0.6)
    images, points = [], []
    for seed in range(5):
        if seed:  # writes in every leaf node, some put back what an older point held
            for leaf in range(4):
                off = leaf * FANOUT * 4096 + seed * 8192
                data[off:off + 4096] = bytes([seed % 3]) * 4096
            img.write_bytes(data)
        images.append(bytes(data))
        points.append(backup(repo, "v", img))
    for doomed in (2, 0, 4):  # a middle point, the first, the last
        delete_points(repo, [points[doomed]])
        assert +Counter(repo.catalog.chunk_refs()) == +expected_refs(repo, repo.nodes)
    for i in (1, 3):
        out = tmp_path / f"out{i}.img"
        restore_image(PointReader(repo, points[i]), out)
        assert out.read_bytes() == images[i]
    assert verify(repo).ok
