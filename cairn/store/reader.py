"""Reading a point: any byte range of any point, straight from its own block map.

No history is replayed: the block at an offset is found by walking this point's tree from
its root (a handful of cached node lookups), whatever the number of points before it. The
one reader serves restore, NBD exports, clones and file browsing (insights), with one
policy for what it keeps and what it reads ahead (`BlockCache`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from typing import cast

from cairn.store.blockmap import FANOUT, Tree
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO, ChunkStore
from cairn.store.readahead import ReadAhead
from cairn.store.repository import Repository

CACHE_BYTES = 32 * 1024 * 1024
"""Decoded bytes kept per cache by default: 512 blocks at the default 64 KiB block size."""
READAHEAD_THREADS = 4
LEAF_NODES = 256
"""Level-1 block-map nodes kept per reader: 4 MiB of hashes, 8 GiB of disk at 64 KiB blocks."""


def _pair(digest: bytes, data: bytes) -> tuple[bytes, bytes]:
    return digest, data


class _Batch:
    """Blocks being fetched together: whoever needs one of them waits for the batch (one
    event a batch, not one a block: a 2 MiB read is 32 blocks)."""

    def __init__(self, digests: list[bytes]) -> None:
        self.digests = digests
        self.done = threading.Event()
        self.blocks: dict[bytes, bytes] = {}  # empty when the fetch failed


class BlockCache:
    """Decoded blocks by hash, at most ``max_bytes`` of them, the least recently used
    evicted; safe across threads.

    Small reads share blocks: a booting machine or a file-system library reads a 64 KiB
    block in 4 KiB pieces, and each piece would otherwise fetch, decompress and check the
    whole block again. Blocks are keyed by hash, so points read side by side (the two of a
    diff) may share one cache and fetch the blocks they have in common once.

    What a read needs now is fetched on the caller's thread, in one batch
    (`ChunkStore.get_many`: for packs one index query and neighbours in one read): handing
    it to a pool and waiting costs more than a local read. What the caller will likely read
    next (`prefetch`) is fetched on a small pool meanwhile: chunk reads wait on a disk or
    the network, and reads run on (a file streamed, a disk booting), so overlapping those
    waits is most of a cold read's speed. A block being fetched is never fetched twice:
    later callers wait for it.
    """

    def __init__(self, chunks: ChunkStore, max_bytes: int = CACHE_BYTES) -> None:
        self._chunks = chunks
        self._max_bytes = max_bytes
        self._bytes = 0  # decoded bytes held, never above max_bytes once a load is done
        self._blocks: OrderedDict[bytes, bytes] = OrderedDict()
        self._pending: dict[bytes, _Batch] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None  # started by the first read-ahead
        self._closed = False

    def get(self, digest: bytes) -> bytes:
        """The content of ``digest`` (never ZERO), checked: `get_many` of one, with the
        cache hit that most small reads are taken quickly."""
        with self._lock:
            block = self._blocks.get(digest)
            if block is not None:
                self._blocks.move_to_end(digest)
                return block
        return self.get_many((digest,))[digest]

    def held_blocks(self, digests: list[bytes], zeros: bytes, ahead: bool = False
                    ) -> list[bytes] | None:
        """The content of each of ``digests`` in order (``zeros`` for ZERO) if every one is
        held now, else None: nothing is fetched, so a server can answer a cached read at
        once and hand the rest to a pool. With ``ahead``, blocks being fetched already
        (read ahead) are waited for: None only when one is neither held nor being
        fetched, or its fetch failed (the pool's read then reports the error)."""
        with self._lock:
            blocks = self._blocks
            get = blocks.get
            found = [zeros if digest == ZERO else get(digest) for digest in digests]
            if None not in found:
                touch = blocks.move_to_end
                for digest in digests:
                    if digest != ZERO:
                        touch(digest)
                return cast("list[bytes]", found)
            fetching = self._fetching(digests, found) if ahead else None
        if not fetching:
            return None
        for batch in fetching:
            batch.done.wait()
        return self.held_blocks(digests, zeros)

    def _fetching(self, digests: list[bytes], found: list[bytes | None]) -> list[_Batch] | None:
        """The fetches under way that bring every block of ``digests`` not ``found``
        (under the lock), or None when one of them is not being fetched."""
        fetching: dict[int, _Batch] = {}
        for digest, block in zip(digests, found, strict=True):
            if block is None:
                batch = self._pending.get(digest)
                if batch is None:
                    return None
                fetching[id(batch)] = batch
        return list(fetching.values())

    def get_many(self, digests: Iterable[bytes]) -> dict[bytes, bytes]:
        """The content of each of ``digests`` (never ZERO), checked."""
        found: dict[bytes, bytes] = {}
        waiting: dict[bytes, _Batch] = {}
        mine = _Batch([])
        with self._lock:
            for digest in digests:
                block = self._blocks.get(digest)
                if block is not None:
                    self._blocks.move_to_end(digest)
                    found[digest] = block
                elif digest in self._pending:
                    waiting[digest] = self._pending[digest]
                else:
                    self._pending[digest] = mine
                    mine.digests.append(digest)
        if mine.digests:
            found.update(self._load(mine))
        retry: list[bytes] = []
        for digest, batch in waiting.items():
            batch.done.wait()
            if digest in batch.blocks:
                found[digest] = batch.blocks[digest]
            else:  # the batch it was part of failed: its own error is read here
                retry.append(digest)
        if retry:
            found.update(self._chunks.get_many(retry, _pair))
        return found

    def prefetch(self, digests: Iterable[bytes]) -> None:
        """Start fetching ``digests`` (never ZERO) in the background, those not yet at hand."""
        with self._lock:
            wanted = [d for d in dict.fromkeys(digests)
                      if d not in self._blocks and d not in self._pending]
            if self._closed or not wanted:  # most calls while a held point is read again
                return
            batch = _Batch(wanted)
            for digest in batch.digests:
                self._pending[digest] = batch
            if self._pool is None:
                self._pool = ThreadPoolExecutor(READAHEAD_THREADS,
                                                thread_name_prefix="cairn-readahead")
            self._pool.submit(self._load, batch)

    def _load(self, batch: _Batch) -> dict[bytes, bytes]:
        """Fetch ``batch`` (marked pending by the caller) in one go, then wake its waiters:
        they find the blocks in it, or none when the fetch failed."""
        try:
            got = dict(self._chunks.get_many_kept(batch.digests, _pair))
            with self._lock:
                self._keep(got)
            batch.blocks = got
            return got
        finally:
            with self._lock:
                for digest in batch.digests:
                    del self._pending[digest]
            batch.done.set()

    @property
    def held(self) -> int:
        """Decoded bytes held now (what the bound limits)."""
        with self._lock:
            return self._bytes

    def _keep(self, got: dict[bytes, bytes]) -> None:
        """Add ``got`` (under the lock; none of it is held: it was pending), then evict the
        least recently used past the bound."""
        self._blocks.update(got)
        self._bytes += sum(map(len, got.values()))
        while self._bytes > self._max_bytes:
            self._bytes -= len(self._blocks.popitem(last=False)[1])

    def close(self) -> None:
        """Wait for the read-ahead under way (a few blocks) and stop its threads."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


class PointReader:
    """Byte ranges of one point; safe to share between threads (an NBD export's clients).

    Reads go through a `BlockCache`, the reader's own unless one is given (the caller then
    closes it). Reads that go on from where earlier ones ended fetch the next blocks ahead
    (`cairn.store.readahead`). Close the reader (or use it as a context manager) to stop
    the read-ahead threads.
    """

    def __init__(self, repo: Repository, point: RecoveryPoint,
                 cache: BlockCache | None = None) -> None:
        self.repo = repo
        self.point = point
        self.tree: Tree = repo.tree(point)
        self.block_size = repo.block_size
        self.size = point.size
        self._own_cache = cache is None
        self.cache = BlockCache(repo.chunks) if cache is None else cache
        self._ahead = ReadAhead(self.tree.blocks)
        self._zeros = bytes(self.block_size)  # what a hole's block reads as
        self._leaf_nodes: OrderedDict[int, list[bytes]] = OrderedDict()
        self._nodes_lock = threading.Lock()

    def __enter__(self) -> PointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_cache:
            self.cache.close()

    def block_hashes(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """``(block, hash)`` in disk order; ZERO marks a hole."""
        return self.repo.nodes.leaves(self.tree, start, self.tree.blocks if stop is None else stop)

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; fewer only at the end of the point."""
        pieces = self.pieces(offset, length)
        assert pieces is not None
        if len(pieces) == 1:  # a whole block is returned as it is held, uncopied
            return pieces[0] if isinstance(pieces[0], bytes) else pieces[0].tobytes()
        return b"".join(pieces)

    def pieces(self, offset: int, length: int, wait: bool = True, ahead: bool = False
               ) -> list[bytes | memoryview] | None:
        """The bytes `pread` returns as the cached blocks (and one shared block of zeros
        for holes) in order, views of them where the range cuts one, not joined: a server
        sends them as they are (`socket.sendmsg`), without copying a read's megabytes once
        more.

        With ``wait`` False nothing is fetched: None unless every block is held already,
        or with ``ahead`` is held or being read ahead (that read is waited for).
        """
        if offset < 0 or length < 0:
            raise ValueError(f"range {offset}+{length} is negative")
        length = min(length, self.size - offset)
        if length <= 0:
            return [b""]
        bs = self.block_size
        first, last = offset // bs, (offset + length - 1) // bs
        hashes = self._hashes(first, last + 1)
        if wait:
            wanted = list(dict.fromkeys(digest for digest in hashes if digest != ZERO))
            found = self._fetch(first, last, wanted)
            blocks = [found[digest] if digest != ZERO else self._zeros for digest in hashes]
        else:
            self._follow(first, last)  # the next blocks are asked for before any wait
            held = self.cache.held_blocks(hashes, self._zeros, ahead)
            if held is None:
                return None
            blocks = held
        skip = offset - first * bs
        if not skip and length == len(blocks) * bs:  # whole blocks: most NBD reads
            return list(blocks)
        return _views(blocks, skip, length)

    def _fetch(self, first: int, last: int, wanted: list[bytes]) -> dict[bytes, bytes]:
        """Blocks ``wanted`` (of blocks ``first..last``), reading ahead when reads stream."""
        self._follow(first, last)
        if len(wanted) == 1:
            return {wanted[0]: self.cache.get(wanted[0])}
        return self.cache.get_many(wanted)

    def _follow(self, first: int, last: int) -> None:
        """Note a read of blocks ``first..last``, and prefetch what `ReadAhead` asks for (a
        stream's next blocks), those of them that are data."""
        ahead = self._ahead.follow(first, last)
        if ahead:
            self.cache.prefetch(d for d in self._hashes(ahead.start, ahead.stop) if d != ZERO)

    def _hashes(self, start: int, stop: int) -> list[bytes]:
        """The hashes of blocks ``start..stop-1``, keeping recent level-1 nodes at hand: most
        reads are of a piece of one block, and walking from the root for each (as the bulk
        `block_hashes` does) costs more than the read."""
        out: list[bytes] = []
        for node_index in range(start // FANOUT, (stop - 1) // FANOUT + 1):
            base = node_index * FANOUT
            out += self._leaf_node(node_index)[max(start - base, 0) : stop - base]
        return out

    def _leaf_node(self, node_index: int) -> list[bytes]:
        """The block hashes under level-1 node ``node_index``."""
        kids = self._leaf_nodes.get(node_index)  # one atomic look-up: no lock for a hit
        if kids is None:
            nodes = self.repo.nodes
            kids = nodes.children(self.tree, 1, node_index, nodes.slot(self.tree, 1, node_index))
            with self._nodes_lock:
                self._leaf_nodes[node_index] = kids
                if len(self._leaf_nodes) > LEAF_NODES:
                    self._leaf_nodes.popitem(last=False)
        return kids

    def extents(self, offset: int, length: int,
                is_hole: Callable[[int, bytes], bool] | None = None) -> list[tuple[int, bool]]:
        """Runs ``(length, is_hole)`` covering the range, merged where alike.

        ``is_hole(block, hash)`` decides what is a hole (a clone's overlay changes that);
        by default a block is a hole when the point holds no data for it.
        """
        bs = self.block_size
        end = min(offset + length, self.size)
        first = offset // bs
        hashes = [digest for _, digest in self.block_hashes(first, -(-end // bs))]
        holes = [is_hole(index, digest) for index, digest in enumerate(hashes, first)] \
            if is_hole else [digest == ZERO for digest in hashes]
        out: list[tuple[int, bool]] = []
        pos, block = offset, first
        for hole, run in groupby(holes):  # runs of like blocks, merged in C
            block += sum(1 for _ in run)
            stop = min(block * bs, end)
            out.append((stop - pos, hole))
            pos = stop
        return out

def _views(blocks: list[bytes], skip: int, length: int) -> list[bytes | memoryview]:
    """Cut ``length`` bytes from ``skip`` into ``blocks``: whole blocks as they are, views
    of those the range cuts."""
    out: list[bytes | memoryview] = []
    for block in blocks:
        if not skip and length >= len(block):
            out.append(block)
            length -= len(block)
            continue
        piece = memoryview(block)[skip : skip + length]
        out.append(piece)
        length -= len(piece)
        skip = 0
    return out
