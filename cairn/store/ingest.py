"""Backup: turn the current state of a source into a new, whole recovery point.

Only blocks that may have changed are read: every block on the first backup (or a full
scan), or just the blocks under the byte ranges a change tracker hands in. Each block read
is hashed; where the hash equals the parent point's in the same slot nothing happens. A
changed block is pinned in the catalog and written unless some volume already holds it
intact: a quarantined chunk (`Catalog.bad_chunks`) never counts as held, and the blocks of
the parent that hold one are read again, so the backup stores a fresh copy and heals every
point that shares it.
The new block map shares every untouched subtree with its parent, and the point becomes
visible in one catalog commit after the backend's ``sync``: a crash before that loses only
this point, and its pins tell the next writer what to clean up.

Hashing, zstd and file I/O release the GIL, so a small thread pool scales them over cores
while this module only orchestrates. What it holds is bounded by bytes, never by the size
of the source: reads of at most SCAN_BYTES, a read-ahead window of WORKERS * 2 of them, new
chunks flushed once they keep WORKERS reads alive, and writes waited for once they keep
WRITE_AHEAD reads alive (an appliance ingesting a 1 GiB upload held 220 MB when each of
these was counted in 16 MiB reads). Nor does it keep anything per block: the block map is
built as the blocks come (`TreeBuilder`), a chunk met again is known by its pin, the runs
and sizes the commit needs wait in the catalog (`Tally`), and local packs are synced every
SYNC_CHUNKS writes so that their index of them does not wait in memory either (a first
backup once held about 11 MiB per GiB of disk).
"""

from __future__ import annotations

import bisect
import heapq
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

from cairn.errors import Corruption
from cairn.store import reserve
from cairn.store.backends.packs import PackBackend
from cairn.store.blockmap import NodeCache, Tree, TreeBuilder, diff
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO
from cairn.store.cloud_counts import settle
from cairn.store.repository import Repository, check_volume_name, tolerant_nodes
from cairn.store.tally import Tally

BATCH_BLOCKS = 256
SCAN_BYTES = 2 * 1024 * 1024
WORKERS = max(2, min(8, os.cpu_count() or 2))
WRITE_AHEAD = 2 * WORKERS * SCAN_BYTES
NODE_BATCH = 16
SYNC_CHUNKS = 4096


class Source(Protocol):
    """What a backup reads: a fixed-size run of bytes (an image file, a block device)."""

    @property
    def size(self) -> int: ...

    @property
    def name(self) -> str: ...

    def pread(self, offset: int, length: int) -> bytes: ...

    def data_extents(self) -> Sequence[tuple[int, int]]:
        """Sorted ``(start, end)`` byte ranges outside of which the source reads as zeros."""
        ...


Progress = Callable[[int], None]


@dataclass(frozen=True)
class _Scanned:
    start: int
    hashes: list[bytes]
    data: memoryview


def _runs(blocks: Iterable[int], longest: int) -> Iterator[tuple[int, int]]:
    """Group sorted block numbers into ``(start, count)`` runs of at most ``longest``."""
    start = count = -1
    for b in blocks:
        if count > 0 and b == start + count and count < longest:
            count += 1
            continue
        if count > 0:
            yield start, count
        start, count = b, 1
    if count > 0:
        yield start, count


def blocks_of_ranges(ranges: Sequence[tuple[int, int]], block_size: int,
                     size: int) -> Iterator[int]:
    """The block numbers that byte ranges ``(offset, length)`` touch, in order, each once.
    Generated, never gathered (a set of the blocks of a whole volume held about 1 MB per
    GiB), from the ranges as they are when they come sorted (an upload's plan, compact),
    else from a sorted copy."""
    ordered = all(a[0] <= b[0] for a, b in pairwise(ranges))
    done = -1
    for offset, length in ranges if ordered else sorted(ranges):
        if length <= 0:
            continue
        last = min(offset + length - 1, size - 1) // block_size
        yield from range(max(offset // block_size, done + 1), last + 1)
        done = max(done, last)


def _unique(blocks: Iterable[int]) -> Iterator[int]:
    """Sorted block numbers with repeats dropped."""
    previous = -1
    for block in blocks:
        if block != previous:
            yield block
            previous = block


class _Pass:
    """One ingest's running state: the new block map being built, the new chunks waiting
    to be pinned and written as one batch, and the runs and sizes to commit (`Tally`).

    Nothing here grows with the source: the block map is built as blocks come
    (`TreeBuilder`), a chunk met again in a later batch is known by its pin, and what the
    commit needs waits in the catalog. New chunks are pinned and written in batches of
    about BATCH_BLOCKS: a short changed range alone would cost a catalog transaction for a
    few chunks. A batch keeps the reads it slices alive, so it also closes at WORKERS
    reads' worth, and the writes queued keep them alive until they land, so past
    WRITE_AHEAD bytes the pass waits for them. Every SYNC_CHUNKS written local packs are
    synced in the background: they index their puts only then, in memory until they do
    (about 250 bytes a chunk).
    """

    def __init__(self, ingest: Ingest, session: int, parent: RecoveryPoint | None,
                 base: Tree | None) -> None:
        self.ingest = ingest
        self.repo = ingest.repo
        self.session = session
        self.base = base
        self.same_shape = base is not None and base.blocks == ingest.blocks
        self.builder = TreeBuilder(self.repo.nodes, self.repo.chunks.hash, base,
                                   ingest.blocks)
        self.counts_runs = parent is None or self.same_shape
        """whether the builder's runs are the point's (else a diff counts them)"""
        self.tally = Tally(self.repo.catalog, session)
        self.healed: list[bytes] = []
        self.allocated_delta = 0
        self.writes: list[Future[list[tuple[bytes, int, int]]]] = []
        self.writing = 0
        self.bytes_read = 0
        self.fresh: dict[bytes, bytes | memoryview] = {}
        self.nodes: dict[bytes, bytes | memoryview] = {}
        self.held = 0
        self.unsynced = 0
        self.syncing: Future[None] | None = None
        self.indexes_at_sync = isinstance(self.repo.chunks.backend, PackBackend)
        """only local packs hold an index of their puts until a sync: a cloud's packs
        forget theirs as each uploads (an early sync would only cut a pack short), and
        one file per chunk holds nothing"""

    def _put_all(self, items: list[tuple[bytes, bytes | memoryview]],
                 compress: bool) -> list[tuple[bytes, int, int]]:
        bad = self.ingest.bad
        return [(d, len(data), self.repo.chunks.put(d, data, compress, d in bad))
                for d, data in items]

    def store(self, pool: ThreadPoolExecutor, items: dict[bytes, bytes | memoryview],
              compress: bool = True) -> None:
        """Pin those of ``items`` this session has not pinned yet, then write the missing
        ones as one job: a future per chunk would cost more than compressing it."""
        catalog = self.repo.catalog
        done = catalog.pinned_by(self.session, list(items))
        new = [d for d in items if d not in done]
        present = catalog.pin(self.session, new)
        bad = self.ingest.bad
        missing = [(d, items[d]) for d in new
                   if d not in present or d in bad or not self.ingest._intact(d)]
        if missing:
            self.writes.append(pool.submit(self._put_all, missing, compress))

    def _old(self, scanned: _Scanned) -> list[bytes | None]:
        """The parent's hashes of the scanned blocks (None where it has none)."""
        count = len(scanned.hashes)
        if self.same_shape and self.base is not None:
            return [h for _, h in self.repo.nodes.leaves(self.base, scanned.start,
                                                         scanned.start + count)]
        return [None] * count

    def take(self, scanned: _Scanned) -> None:
        """Note what the scanned blocks change; queue the chunks never seen for writing."""
        self.bytes_read += len(scanned.data)
        bs, bad = self.ingest.block_size, self.ingest.bad
        before = len(self.fresh)
        for k, (digest, was) in enumerate(zip(scanned.hashes, self._old(scanned),
                                              strict=True)):
            index = scanned.start + k
            length = self.ingest._block_len(index)
            if digest == was:
                if digest in bad:  # heal in place
                    self.fresh[digest] = scanned.data[k * bs : k * bs + length]
                continue
            self.builder.set(index, digest)
            self.allocated_delta += length * ((digest != ZERO) - (was not in (None, ZERO)))
            if digest != ZERO:
                self.fresh[digest] = scanned.data[k * bs : k * bs + length]
        if len(self.fresh) > before:
            self.held += len(scanned.data)
        self._built()

    def _built(self) -> None:
        """Take the builder's new runs and finished nodes."""
        if self.counts_runs:
            self.tally.add_runs(self.builder.runs)
        self.builder.runs.clear()
        self.nodes.update(self.builder.take_nodes())

    def flush(self, pool: ThreadPoolExecutor, last: bool) -> None:
        """Store the waiting chunks when the batch is full, holds too much, or is the last."""
        full = len(self.fresh) >= BATCH_BLOCKS or self.held >= WORKERS * SCAN_BYTES
        if self.fresh and (full or last):
            self.store(pool, self.fresh)
            self.writing += self.held
            self.fresh, self.held = {}, 0
        if len(self.nodes) >= NODE_BATCH:  # stored raw: a delete's walk never loads zstd
            self.store(pool, self.nodes, compress=False)
            self.nodes = {}

    def drain(self, syncer: ThreadPoolExecutor) -> None:
        """Collect the writes that landed; wait for all once they hold WRITE_AHEAD bytes;
        start a background sync of local packs once SYNC_CHUNKS were written since the
        last (after the one before it ended)."""
        block = self.writing > WRITE_AHEAD
        self._collect(block)
        if block or not self.writes:
            self.writing = 0
        if self.indexes_at_sync and self.unsynced >= SYNC_CHUNKS \
                and (self.syncing is None or self.syncing.done()):
            self._synced()
            self.syncing = syncer.submit(self.repo.chunks.backend.sync)
            self.unsynced = 0

    def _synced(self) -> None:
        """Wait for the background sync, if any (its failure fails the backup)."""
        if self.syncing is not None:
            self.syncing.result()
            self.syncing = None

    def _collect(self, block: bool) -> None:
        """Tally the chunk writes that landed; wait for all of them when ``block``."""
        keep = []
        for fut in self.writes:
            if block or fut.done():
                for digest, length, stored in fut.result():
                    self.tally.add_written(digest, length, stored)
                    self.unsynced += 1
                    if digest in self.ingest.bad:
                        self.healed.append(digest)
            else:
                keep.append(fut)
        self.writes[:] = keep

    def finish(self, pool: ThreadPoolExecutor) -> Tree:
        """The new point's tree, once every chunk write has landed and the background
        sync ended."""
        tree = self.builder.finish()
        self._built()
        if self.nodes:
            self.store(pool, self.nodes, compress=False)
        self._collect(block=True)
        self._synced()
        return tree

    def allocated(self, parent: RecoveryPoint | None) -> int:
        """The new point's allocated bytes."""
        if self.same_shape:
            assert parent is not None
            return parent.allocated + self.allocated_delta
        return self.allocated_delta


class Ingest:
    """One backup of one volume; `run` does it and returns the committed point."""

    def __init__(self, repo: Repository, volume: str, source: Source,
                 progress: Progress | None = None, origin: str | None = None) -> None:
        """``origin`` names what asked for this point (an appliance upload): committed
        with the point, so running the same origin again returns that point, whatever
        crashed between the store's commit and the caller's own record of it."""
        self.repo = repo
        self.origin = origin
        self.volume_name = check_volume_name(volume)
        self.source = source
        self.progress = progress
        self.block_size = repo.block_size
        self.size = source.size
        self.blocks = -(-self.size // self.block_size)
        self.zero_block = bytes(self.block_size)
        self._data = source.data_extents()
        self.bad: dict[bytes, str] = {}
        self.rebuild = False

    def _all_hole(self, offset: int, end: int) -> bool:
        """Whether ``[offset, end)`` lies wholly in a hole of the source."""
        i = bisect.bisect_right(self._data, (offset, float("inf"))) - 1
        if i >= 0 and self._data[i][1] > offset:
            return False
        return i + 1 >= len(self._data) or self._data[i + 1][0] >= end

    def _block_len(self, index: int) -> int:
        return min(self.block_size, self.size - index * self.block_size)

    def _scan(self, start: int, count: int) -> _Scanned:
        offset = start * self.block_size
        length = min(count * self.block_size, self.size - offset)
        if self._all_hole(offset, offset + length):
            return _Scanned(start, [ZERO] * count, memoryview(b""))
        data = memoryview(self.source.pread(offset, length))
        hashes = []
        bs = self.block_size
        for k in range(count):
            block = data[k * bs : (k + 1) * bs]
            if block == self.zero_block[: len(block)]:
                hashes.append(ZERO)
            else:
                hashes.append(self.repo.chunks.hash(block))
        return _Scanned(start, hashes, data)

    def run(self, changed_ranges: Sequence[tuple[int, int]] | None = None) -> RecoveryPoint:
        repo = self.repo
        started = time.monotonic()
        if repo.remote is None:
            reserve.check_room(repo.path)
        volume = repo.catalog.ensure_volume(self.volume_name)
        with repo.volume_lock(volume):
            done = repo.catalog.point_by_origin(self.origin) if self.origin else None
            if done is not None:
                return done
            repo.recover(volume)
            if repo.remote is not None:  # dedup against every point's chunks: count them
                settle(repo)
            repo.record_damage()
            self.bad = repo.catalog.bad_chunks()
            parent = repo.catalog.latest(volume.id)
            base = repo.tree(parent) if parent is not None else None
            heal = self._damaged_blocks(base) if base is not None and self.bad else []
            if heal is None:  # the parent's own block map is damaged: read everything
                base, self.rebuild = None, True
            if base is not None and parent is not None and parent.size == self.size \
                    and changed_ranges is not None:
                candidates: Iterable[int] = _unique(heapq.merge(
                    sorted(heal or ()), blocks_of_ranges(changed_ranges, self.block_size,
                                                         self.size)))
            else:
                candidates = range(self.blocks)
            session = repo.catalog.open_session(volume.id)
            try:
                with repo.chunk_lock():
                    point = self._ingest(session, volume.id, parent, base, candidates, started)
            except BaseException:
                repo.drop_session(session)
                raise
            repo.reclaim()
        return point

    def _damaged_blocks(self, base: Tree) -> list[int] | None:
        """The parent's blocks whose chunks are quarantined (read again, so their fresh
        copies heal every point that shares them), or None when the parent's block map
        itself cannot be read."""
        blocks = []
        try:  # a fresh cache: nodes this process read before may have been damaged since
            for (level, index), _old, digest in diff(NodeCache(self.repo.chunks.get), None, base):
                if digest in self.bad:
                    if level:
                        return None
                    blocks.append(index)
        except Corruption:
            return None
        return blocks

    def _intact(self, digest: bytes) -> bool:
        """Whether a chunk the catalog holds may be reused. Always, unless the parent's
        block map is damaged (`rebuild`): then what lay below its damaged nodes was never
        checked, so each chunk is read (and quarantined when it fails)."""
        if not self.rebuild:
            return True
        try:
            self.repo.chunks.get(digest)
        except Corruption as exc:
            self.bad[digest] = str(exc)
            return False
        return True

    def _count_runs(self, parent: RecoveryPoint | None, tree: Tree, tally: Tally) -> None:
        """Count the runs the new point starts where its builder could not: against a
        parent of another size, or one whose block map is damaged. Where the parent's map
        is damaged below a slot that changed, the slots under it count as new runs: an
        over-count only keeps chunks longer, where guessing could free one a point needs."""
        old = self.repo.tree(parent) if parent is not None else None
        try:
            self._stage_diff(NodeCache(self.repo.chunks.get, capacity=64), old, tree, tally)
        except Corruption:
            tally.drop_runs()
            self._stage_diff(tolerant_nodes(self.repo), old, tree, tally)

    @staticmethod
    def _stage_diff(nodes: NodeCache, old: Tree | None, tree: Tree, tally: Tally) -> None:
        """Tally one run per slot where ``tree`` differs from ``old``, by the batch."""
        batch = []
        for _slot, _was, digest in diff(nodes, old, tree):
            if digest is not None and digest != ZERO:
                batch.append(digest)
                if len(batch) >= BATCH_BLOCKS:
                    tally.add_runs(batch)
                    batch = []
        tally.add_runs(batch)

    def _scans(self, pool: ThreadPoolExecutor, candidates: Iterable[int]
               ) -> Iterator[tuple[_Scanned, bool]]:
        """Each run of candidate blocks read and hashed (up to WORKERS * 2 ahead), in
        order, with whether it is the last."""
        window: deque[Future[_Scanned]] = deque()
        pending_runs = _runs(candidates, max(1, min(BATCH_BLOCKS,
                                                    SCAN_BYTES // self.block_size)))
        for run in pending_runs:
            window.append(pool.submit(self._scan, *run))
            if len(window) >= WORKERS * 2:
                break
        while window:
            scanned = window.popleft().result()
            nxt = next(pending_runs, None)
            if nxt is not None:
                window.append(pool.submit(self._scan, *nxt))
            yield scanned, not window

    def _ingest(self, session: int, volume_id: int, parent: RecoveryPoint | None,
                base: Tree | None, candidates: Iterable[int], started: float) -> RecoveryPoint:
        repo = self.repo
        work = _Pass(self, session, parent, base)
        with ThreadPoolExecutor(WORKERS) as pool, ThreadPoolExecutor(1) as syncer:
            for scanned, last in self._scans(pool, candidates):
                work.take(scanned)
                work.flush(pool, last)
                work.drain(syncer)
                if self.progress:
                    self.progress(min(len(scanned.hashes) * self.block_size,
                                      self.size - scanned.start * self.block_size))
            tree = work.finish(pool)
        work.tally.flush()
        repo.chunks.backend.sync()
        if not work.counts_runs:  # walks the new nodes: read back only once they are synced
            self._count_runs(parent, tree, work.tally)
            work.tally.flush()
        point = RecoveryPoint(
            id=repo.new_point_id(), volume=self.volume_name, volume_id=volume_id, seq=0,
            created=time.time(), size=self.size, root=tree.root,
            allocated=work.allocated(parent), bytes_read=work.bytes_read,
            bytes_stored=work.tally.bytes_stored,
            seconds=round(time.monotonic() - started, 3), source=self.source.name)
        repo.publish(point)
        with repo.catalog.transaction():
            repo.catalog.commit_point(session, point, Counter(), {})
            if self.origin:
                repo.catalog.record_origin(self.origin, point.id)
        if work.healed:
            repo.catalog.mark_healed(work.healed)
        committed = repo.catalog.point(point.id)
        assert committed is not None
        return committed
