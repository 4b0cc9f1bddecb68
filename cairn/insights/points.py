"""Recovery points as disks for insights: a cached volume reader, and what changed between two.

File-system libraries read in small pieces (an inode, a directory block), many of them in
the same 64 KiB block; `PointVolume` keeps recently decoded blocks so each is fetched and
decompressed once, not once per 4 KiB read. Blocks are keyed by hash, so two points opened
side by side share the cache for every block they have in common. A miss fetches the rest
of the read, and a few blocks beyond when reads run on, in parallel (see `BlockCache`).

`changed_ranges` is why a diff is cheap: two points of a volume share every unchanged
subtree of their block maps, so the tree diff visits only what changed and names the
blocks that differ without reading any data. Insights then reads only the files whose
metadata or blocks are among them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass

from cairn.errors import CairnError
from cairn.insights.diff import ChangedRanges, Diff, diff
from cairn.insights.disk import Volume, open_disk
from cairn.store import blockmap
from cairn.store.blockmap import FANOUT
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO
from cairn.store.repository import Repository

CACHE_BLOCKS = 512
"""Decoded blocks kept per cache: 32 MiB at the default 64 KiB block size."""
READAHEAD = 8
"""Blocks fetched in parallel after a miss (and threads fetching them)."""
LEAF_NODES = 256
"""Level-1 block-map nodes kept per point: 4 MiB of hashes, 8 GiB of disk at 64 KiB blocks."""


class BlockCache:
    """Decoded blocks by hash, least recently used evicted; safe across threads.

    A miss also starts fetching the blocks the caller expects next (``ahead``), on a small
    thread pool: chunk reads wait on the disk or the network, and file-system metadata and
    file contents are read in runs, so overlapping those waits is most of a cold read's
    speed. The block the caller needs now is fetched in the caller's own thread: handing it
    to the pool and waiting costs more than a local chunk read (a walk of a cold file
    system is a third slower that way). A block being fetched is never fetched twice: later
    callers wait for it.
    """

    def __init__(self, fetch: Callable[[bytes], bytes], capacity: int = CACHE_BLOCKS,
                 workers: int = READAHEAD) -> None:
        self._fetch = fetch
        self._blocks: OrderedDict[bytes, bytes] = OrderedDict()
        self._pending: dict[bytes, Future[bytes]] = {}
        self._capacity = capacity
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="cairn-readahead")

    def get(self, digest: bytes, ahead: Callable[[], list[bytes]]) -> bytes:
        with self._lock:
            block = self._blocks.get(digest)
            if block is not None:
                self._blocks.move_to_end(digest)
                return block
            future = self._pending.get(digest)
            mine = future is None
            if future is None:
                future = self._pending[digest] = Future()  # fetched below, in this thread
        if not mine:
            self._prefetch(ahead)
            return future.result()
        try:
            self._prefetch(ahead)
            block = self._load(digest)
        except BaseException as e:
            with self._lock:
                self._pending.pop(digest, None)
            future.set_exception(e)  # for the callers waiting on this fetch
            raise
        future.set_result(block)
        return block

    def _prefetch(self, ahead: Callable[[], list[bytes]]) -> None:
        for later in ahead():
            with self._lock:
                if later not in self._blocks and later not in self._pending:
                    self._pending[later] = self._pool.submit(self._load, later)

    def _load(self, digest: bytes) -> bytes:
        try:
            block = self._fetch(digest)
            with self._lock:
                self._blocks[digest] = block
                if len(self._blocks) > self._capacity:
                    self._blocks.popitem(last=False)
            return block
        finally:
            with self._lock:
                self._pending.pop(digest, None)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class PointVolume:
    """A `VolumeReader` over one recovery point, reading through a `BlockCache`."""

    def __init__(self, repo: Repository, point: RecoveryPoint, cache: BlockCache) -> None:
        self._cache = cache
        self._nodes = repo.nodes
        self._tree = repo.tree(point)
        self._block_size = repo.block_size
        self._leaf_nodes: OrderedDict[int, list[bytes]] = OrderedDict()
        self._last = -2
        self._sequential = False
        self.point = point

    @property
    def size(self) -> int:
        return self.point.size

    def _hash(self, index: int) -> bytes:
        """The hash of block ``index``, keeping recent level-1 nodes at hand: most reads
        are of one block, and walking from the root for each costs more than the read."""
        node_index, position = divmod(index, FANOUT)
        kids = self._leaf_nodes.get(node_index)
        if kids is None:
            slot = self._nodes.slot(self._tree, 1, node_index)
            kids = self._nodes.children(self._tree, 1, node_index, slot)
            self._leaf_nodes[node_index] = kids
            if len(self._leaf_nodes) > LEAF_NODES:
                self._leaf_nodes.popitem(last=False)
        return kids[position]

    def _ahead(self, start: int, stop: int) -> Callable[[], list[bytes]]:
        """What to fetch with a miss: the rest of the read, and READAHEAD more blocks when
        reading runs on from where the previous read ended (a file being streamed)."""
        def hashes() -> list[bytes]:
            end = min(stop + READAHEAD, self._tree.blocks) if self._sequential else stop
            return [h for h in map(self._hash, range(start, end)) if h != ZERO]
        return hashes

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        if offset < 0 or length == 0:
            return b""
        bs = self._block_size
        first, last = offset // bs, (offset + length - 1) // bs
        self._sequential = first in (self._last, self._last + 1)
        self._last = last
        parts = []
        for index in range(first, last + 1):
            digest = self._hash(index)
            if digest == ZERO:
                parts.append(bytes(min(bs, self.size - index * bs)))
            else:
                parts.append(self._cache.get(digest, self._ahead(index + 1, last + 1)))
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        skip = offset - first * bs
        return data[skip : skip + length]


def changed_ranges(repo: Repository, a: RecoveryPoint, b: RecoveryPoint) -> ChangedRanges:
    """The byte ranges where ``a`` and ``b`` differ, from their block maps alone (no data read).

    Every level-0 slot the tree diff yields is one block that differs (or exists in only
    one of the points, when their sizes differ); adjacent blocks merge into one range.
    """
    bs = repo.block_size
    end = max(a.size, b.size)
    ranges: list[tuple[int, int]] = []
    for (level, index), _, _ in blockmap.diff(repo.nodes, repo.tree(a), repo.tree(b)):
        if level != 0:
            continue
        start = index * bs
        length = min(bs, end - start)
        if ranges and ranges[-1][0] + ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
        else:
            ranges.append((start, length))
    return ChangedRanges(ranges)


@contextmanager
def open_point(repo: Repository, point: RecoveryPoint,
               cache: BlockCache | None = None) -> Iterator[list[Volume]]:
    """The partitions of ``point`` with their file systems (or errors), closed on exit.

    Points opened side by side may share one ``cache`` (the caller then closes it).
    """
    own = cache is None
    blocks = BlockCache(repo.chunks.get) if cache is None else cache
    try:
        volumes = open_disk(PointVolume(repo, point, blocks))
        try:
            yield volumes
        finally:
            for volume in volumes:
                if volume.filesystem is not None:
                    volume.filesystem.close()
    finally:
        if own:
            blocks.close()


@dataclass
class PartitionDiff:
    """What changed in one partition; ``error`` says why it could not be compared."""

    partition: int
    filesystem: str | None
    diff: Diff | None = None
    error: str | None = None


def diff_points(repo: Repository, a: RecoveryPoint, b: RecoveryPoint) -> list[PartitionDiff]:
    """Per partition of ``b`` (and any only in ``a``), the files added, removed, modified.

    A partition whose bytes did not change at all is not even walked. One that moved on
    the disk is compared file by file without the changed-ranges shortcut.
    """
    changed = changed_ranges(repo, a, b)
    cache = BlockCache(repo.chunks.get)
    with closing(cache), open_point(repo, a, cache) as old, open_point(repo, b, cache) as new:
        before = {v.partition.index: v for v in old}
        results = [_partition_diff(before.get(v.partition.index), v, changed) for v in new]
        after = {v.partition.index for v in new}
        results += [PartitionDiff(v.partition.index, None, error=f"{v.partition.describe()} "
                                  "is only in the first point")
                    for v in old if v.partition.index not in after]
    return sorted(results, key=lambda r: r.partition)


def _partition_diff(old: Volume | None, new: Volume, changed: ChangedRanges) -> PartitionDiff:
    part = new.partition
    kind = new.filesystem.kind if new.filesystem else None
    if old is None:
        return PartitionDiff(part.index, kind, error=f"{part.describe()} is only in the "
                             "second point")
    problem = new.error or old.error
    if problem is not None or old.filesystem is None or new.filesystem is None:
        return PartitionDiff(part.index, kind, error=str(problem))
    if old.filesystem.kind != new.filesystem.kind:
        return PartitionDiff(part.index, kind, error=f"{part.describe()} holds {kind} now and "
                             f"held {old.filesystem.kind} before: nothing to compare")
    same_place = (old.partition.start, old.partition.length) == (part.start, part.length)
    inside = changed.within(part.start, part.length) if same_place else None
    if inside is not None and not inside.overlaps(0, part.length):
        return PartitionDiff(part.index, kind, Diff())
    try:
        return PartitionDiff(part.index, kind, diff(old.filesystem, new.filesystem, inside))
    except CairnError as e:
        return PartitionDiff(part.index, kind, error=str(e))
