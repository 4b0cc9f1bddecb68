"""Reading a point: any byte range of any point, straight from its own block map.

No history is replayed: the block at an offset is found by walking this point's tree from
its root (a handful of cached node lookups), whatever the number of points before it. The
same reader serves restore, NBD export and file browsing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator

from cairn.store.blockmap import Tree
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO
from cairn.store.repository import Repository

CACHED_BLOCKS = 128  # 8 MiB of 64 KiB blocks


class PointReader:
    """Byte ranges of one point; safe to share between threads (an NBD export's clients).

    The last CACHED_BLOCKS blocks read are kept decoded: a booting machine reads a 64 KiB
    block in 4 KiB pieces, and each piece would otherwise fetch, decompress and check the
    whole block again, which makes small reads four times dearer.
    """

    def __init__(self, repo: Repository, point: RecoveryPoint) -> None:
        self.repo = repo
        self.point = point
        self.tree: Tree = repo.tree(point)
        self.block_size = repo.block_size
        self.size = point.size
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def block_hashes(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """``(block, hash)`` in disk order; ZERO marks a hole."""
        return self.repo.nodes.leaves(self.tree, start, self.tree.blocks if stop is None else stop)

    def block(self, digest: bytes, length: int) -> bytes:
        if digest == ZERO:
            return bytes(length)
        return self.blocks({digest})[digest]

    def blocks(self, digests: set[bytes]) -> dict[bytes, bytes]:
        """The content of each of ``digests`` (never ZERO): decoded ones from the cache, the
        others checked and decoded from one batch (`ChunkStore.get_many`: for packs one index
        query and neighbours in one read, where a chunk at a time cost a query, a read and
        a lock round each)."""
        found: dict[bytes, bytes] = {}
        with self._lock:
            for digest in digests:
                data = self._cache.get(digest)
                if data is not None:
                    self._cache.move_to_end(digest)
                    found[digest] = data
        missing = [d for d in digests if d not in found]
        if not missing:
            return found
        fetched = dict(self.repo.chunks.get_many(missing, lambda d, data: (d, data)))
        with self._lock:
            self._cache.update(fetched)
            while len(self._cache) > CACHED_BLOCKS:
                self._cache.popitem(last=False)
        return found | fetched

    def pread(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range {offset}+{length} outside point of size {self.size}")
        if length == 0:
            return b""
        bs = self.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        slots = list(self.block_hashes(first, last + 1))
        found = self.blocks({digest for _, digest in slots if digest != ZERO})
        data = b"".join(found[digest] if digest != ZERO else bytes(min(bs, self.size - index * bs))
                        for index, digest in slots)
        skip = offset - first * bs
        return data[skip : skip + length]

    def extents(self, offset: int, length: int,
                is_hole: Callable[[int, bytes], bool] | None = None) -> list[tuple[int, bool]]:
        """Runs ``(length, is_hole)`` covering the range, merged where alike.

        ``is_hole(block, hash)`` decides what is a hole (a clone's overlay changes that);
        by default a block is a hole when the point holds no data for it.
        """
        bs = self.block_size
        out: list[tuple[int, bool]] = []
        end = min(offset + length, self.size)
        pos = offset
        for index, digest in self.block_hashes(offset // bs, -(-end // bs)):
            stop = min((index + 1) * bs, end)
            hole = is_hole(index, digest) if is_hole else digest == ZERO
            if out and out[-1][1] == hole:
                out[-1] = (out[-1][0] + stop - pos, hole)
            else:
                out.append((stop - pos, hole))
            pos = stop
        return out
