"""A point's block map: a Merkle tree over its block hashes, of fixed height.

Level 0 holds the blocks of the volume; a node at level L >= 1 is a chunk holding the
concatenated 32-byte hashes of up to ``FANOUT`` slots of level L-1. The root sits at level
``LEVELS`` for every volume of every size (512**4 blocks of 64 KiB is 4 PiB), so a slot
``(level, index)`` means the same thing in every point of a volume whatever its size: that
is what lets reference counting follow runs of a slot across points (see `runs`).

``ZERO`` in a slot means "all zeros below": an empty disk costs one hash. A point's tree is
named by its root hash and its block count; two points that share a subtree share its node
chunk, so walking two trees side by side skips everything they have in common.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cairn.errors import Corruption
from cairn.store.chunks import HASH_SIZE, ZERO

FANOUT = 512
LEVELS = 4
PRELOAD_NODES = 8  # a read of leaves spanning this many level-1 nodes loads them in bulk
LOST = b""
"""the slot under a damaged node read tolerantly: no hash is known for it"""

FetchMany = Callable[[list[bytes], Callable[[bytes, bytes], object]], Iterator[object]]


@dataclass(frozen=True)
class Tree:
    """The block map of one point: its root hash over ``blocks`` blocks."""

    root: bytes
    blocks: int

    def width(self, level: int) -> int:
        """How many slots this tree has at ``level``."""
        n = self.blocks
        for _ in range(level):
            n = -(-n // FANOUT)
        return max(n, 1) if level == LEVELS else n

    def child_count(self, level: int, index: int) -> int:
        below = self.width(level - 1)
        return max(0, min(FANOUT, below - index * FANOUT))


def split(node: bytes) -> list[bytes]:
    return [node[i : i + HASH_SIZE] for i in range(0, len(node), HASH_SIZE)]


class NodeCache:
    """Decoded interior nodes by hash; a small LRU (nodes are immutable), safe across threads.

    ``fetch_many`` (`ChunkStore.get_many`), when given, lets a long read of leaves load its
    level-1 nodes in one bulk read first: a point's nodes were written by many backups into
    many places, and fetching them one by one, as the walk meets them, costs a random read
    each before any data is read.
    """

    def __init__(self, fetch: Callable[[bytes], bytes], capacity: int = 4096,
                 fetch_many: FetchMany | None = None, tolerant: bool = False) -> None:
        """``tolerant``: a damaged node (one of the wrong length) reads as having no
        children, for walks that must go on past damage; otherwise it is `Corruption`."""
        self._fetch = fetch
        self._tolerant = tolerant
        self._fetch_many = fetch_many
        self._nodes: OrderedDict[bytes, list[bytes]] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def add(self, digest: bytes, node: bytes) -> list[bytes]:
        kids = split(node)
        with self._lock:
            self._nodes[digest] = kids
            if len(self._nodes) > self._capacity:
                self._nodes.popitem(last=False)
        return kids

    def children(self, tree: Tree, level: int, index: int, digest: bytes) -> list[bytes]:
        """The child hashes of slot ``(level, index)`` holding ``digest`` in ``tree``.

        A node holds exactly one whole hash per child of its slot: one that hashes right
        yet holds any other length (written by a key holder, or by a bug) would send a walk
        past the tree's edge, so it is `Corruption` like a chunk that fails its hash."""
        count = tree.child_count(level, index)
        if digest == ZERO:
            return [ZERO] * count
        with self._lock:
            kids = self._nodes.get(digest)
            if kids is not None:
                self._nodes.move_to_end(digest)
        if kids is None:
            kids = self.add(digest, self._fetch(digest))
        if len(kids) != count or (kids and len(kids[-1]) != HASH_SIZE):
            return self.damaged(digest, f"block-map node {digest.hex()} holds {len(kids)} "
                                        f"hashes where its place holds {count}")
        return kids

    def damaged(self, digest: bytes, problem: str) -> list[bytes]:
        """A node that cannot be walked: no children when tolerant, else `Corruption`."""
        if self._tolerant:
            return []
        exc = Corruption(f"{problem}: run `cairn verify` and repair the points it names")
        exc.digest = digest
        raise exc

    def slot(self, tree: Tree, level: int, index: int) -> bytes:
        """The hash in slot ``(level, index)`` of ``tree``, walking down from the root;
        `LOST` below a damaged node read tolerantly (it has no children to walk)."""
        digest = tree.root
        for lvl in range(LEVELS, level, -1):
            node_index = index // FANOUT ** (lvl - level)
            position = (index // FANOUT ** (lvl - 1 - level)) % FANOUT
            kids = self.children(tree, lvl, node_index, digest)
            if not kids:
                return LOST
            digest = kids[position]
        return digest

    def leaves(self, tree: Tree, start: int, stop: int) -> Iterator[tuple[int, bytes]]:
        """Yield ``(block, hash)`` for blocks ``start..stop-1`` reading each level-1 node once."""
        first, last = start // FANOUT, -(-stop // FANOUT)
        if self._fetch_many is not None and last - first >= PRELOAD_NODES:
            wanted = {self.slot(tree, 1, i) for i in range(first, last)} - {ZERO, LOST}
            with self._lock:
                missing = [d for d in wanted if d not in self._nodes]
            for _ in self._fetch_many(missing, self.add):
                pass
        for node_index in range(first, last):
            digest = self.slot(tree, 1, node_index)
            if digest == LOST:  # under a damaged node: its blocks are not yielded
                continue
            kids = self.children(tree, 1, node_index, digest)
            base = node_index * FANOUT
            for k in range(max(start - base, 0), min(stop - base, len(kids))):
                yield base + k, kids[k]


class TreeBuilder:
    """A new point's tree, built as its changed blocks arrive in disk order.

    Only nodes on the paths above changed blocks are rebuilt; every other subtree is the
    parent's, shared as is. With no parent (or a parent of another size) every block must
    be set. What it holds is one open node per level (``LEVELS * FANOUT`` hashes) whatever
    the size of the volume: a node is finished, hashed and handed out (`take_nodes`) as
    soon as a block past it is set, so a backup of a disk of any size never holds a map
    of its blocks. It also counts the runs the new point starts (`runs`) where that needs
    no walk of another tree: against no parent, or against the parent it is built on.
    """

    def __init__(self, cache: NodeCache, hash_node: Callable[[bytes], bytes],
                 parent: Tree | None, blocks: int) -> None:
        self.cache = cache
        self.hash_node = hash_node
        self.base = parent if parent is not None and parent.blocks == blocks else None
        self.shape = Tree(ZERO, blocks)
        self.root: bytes | None = None
        self._open: list[tuple[int, list[bytes], bytes] | None] = [None] * (LEVELS + 1)
        self._nodes: list[tuple[bytes, bytes]] = []
        self._last = -1
        self.runs: list[bytes] = []
        """new runs' chunks (one per slot that differs from the base), for the caller to
        take and empty as it goes"""

    def set(self, index: int, digest: bytes) -> None:
        """Block ``index`` holds ``digest``; blocks must come in increasing order."""
        if index <= self._last:
            raise ValueError(f"block {index} set after block {self._last}")
        self._last = index
        if digest != ZERO:
            self.runs.append(digest)
        self._put(1, index, digest)

    def _put(self, level: int, index: int, digest: bytes) -> None:
        """Slot ``index`` of ``level - 1`` holds ``digest``: write it into its open node."""
        node_index = index // FANOUT
        current = self._open[level]
        if current is not None and current[0] != node_index:
            self._close(level)
            current = None
        if current is None:
            current = self._start(level, node_index)
        current[1][index - node_index * FANOUT] = digest

    def _start(self, level: int, node_index: int) -> tuple[int, list[bytes], bytes]:
        """Open node ``(level, node_index)`` with the parent's children (or zeros)."""
        if self.base is not None:
            was = self.cache.slot(self.base, level, node_index)
            kids = list(self.cache.children(self.base, level, node_index, was))
        else:
            was, kids = ZERO, [ZERO] * self.shape.child_count(level, node_index)
        opened = self._open[level] = (node_index, kids, was)
        return opened

    def _close(self, level: int) -> None:
        """Hash the open node of ``level`` and set it in its own parent."""
        opened = self._open[level]
        assert opened is not None
        node_index, kids, was = opened
        self._open[level] = None
        digest = ZERO
        if any(k != ZERO for k in kids):
            node = b"".join(kids)
            digest = self.hash_node(node)
            self._nodes.append((digest, node))
        if digest not in (ZERO, was):
            self.runs.append(digest)
        if level == LEVELS:
            self.root = digest
        else:
            self._put(level + 1, node_index, digest)

    def take_nodes(self) -> list[tuple[bytes, bytes]]:
        """The ``(hash, node)`` chunks finished since the last call, to be stored."""
        nodes, self._nodes = self._nodes, []
        return nodes

    def finish(self) -> Tree:
        """Close every open node; the new tree (a parent's root when nothing changed)."""
        for level in range(1, LEVELS + 1):
            if self._open[level] is not None:
                self._close(level)
        if self.root is None:
            self._start(LEVELS, 0)
            self._close(LEVELS)
        assert self.root is not None
        return Tree(self.root, self.shape.blocks)


def build(
    cache: NodeCache,
    hash_node: Callable[[bytes], bytes],
    parent: Tree | None,
    blocks: int,
    changed: dict[int, bytes],
) -> tuple[Tree, list[tuple[bytes, bytes]]]:
    """The tree of a new point: ``parent`` with the blocks in ``changed`` replaced (see
    `TreeBuilder`). Returns the tree and the new ``(hash, node)`` chunks to store."""
    builder = TreeBuilder(cache, hash_node, parent, blocks)
    for index in sorted(changed):
        builder.set(index, changed[index])
    tree = builder.finish()
    return tree, builder.take_nodes()


Slot = tuple[int, int]


def diff(
    cache: NodeCache, a: Tree | None, b: Tree | None
) -> Iterator[tuple[Slot, bytes | None, bytes | None]]:
    """Every slot whose hash differs between ``a`` and ``b`` (``None`` where a tree has none).

    Shared subtrees are skipped whole, so the cost follows what changed between the two.
    Slots come in disk order within each level walk (depth first).
    """
    stack: list[tuple[int, int, bytes | None, bytes | None]] = [
        (LEVELS, 0, a.root if a else None, b.root if b else None)
    ]
    while stack:
        level, index, ha, hb = stack.pop()
        if ha == hb:
            continue
        yield (level, index), ha, hb
        if level == 0:
            continue
        ka = cache.children(a, level, index, ha) if a is not None and ha is not None else []
        kb = cache.children(b, level, index, hb) if b is not None and hb is not None else []
        for k in range(max(len(ka), len(kb)) - 1, -1, -1):
            stack.append((level - 1, index * FANOUT + k,
                          ka[k] if k < len(ka) else None, kb[k] if k < len(kb) else None))
