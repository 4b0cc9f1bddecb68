"""Repack: each volume's newest point gathered into packs of its own, read in long reads.

Why: a backup appends only what changed, so after many incrementals of scattered small
writes the newest point is read from every backup's packs: a few blocks here, a few
there, and in the first backup's packs only the blocks not yet rewritten, between stale
ones its reads pass over. It restored 1.3x slower than the oldest point after 200 such
incrementals. The newest point is the one restored, exported and booted most.

What moves: the chunks (blocks and block-map nodes) the newest point reads *sparsely*:
in a read (`PackBackend.reads`: the reads `get_many`, so a restore, makes) that carries
less than MIN_READ of its bytes, or where its bytes are less than DENSE of those read.
What it reads densely stays put, and a volume whose newest point makes fewer than
MIN_SPARSE sparse reads is left alone: a repack runs after many backups, not after each.

Where to: new packs, in the order the chunks were written (their pack's age, then their
place in it). A chunk the newest point holds is held by every point from the one that
wrote it to the newest, so an older point finds all that moved for it at the start of the
new packs, in one run, and the rest of what it reads where it was (the moved copies are
holes now): a repack does not scatter what other points need. A pack the moves left
less than COMPACT live is then rewritten whole (`_Pass.compact`): its chunks in written
order too, so the older points that read them read one dense run instead of chunks
between holes (reading a hole costs no disk but zero-fills memory), and the pack is
unlinked, giving back the file-system blocks a hole shares with a neighbour. No chunk
changes: each is copied as stored, same name, same bytes, after checking it against its
hash (a damaged one is not moved, but quarantined as any read finding damage does).

Beside backups and readers: each copy is indexed by `PackBackend.relocate`, which moves
the row only if it still names the copy that was read (a chunk healed or deleted
meanwhile keeps its state; the new copy is the spare), and the old copy is punched after
that commit, so a committed point never loses a chunk. The chunk lock is held *shared*,
as backups hold it: backups run on, while `Repository.reclaim` waits for the next writer
(a chunk being copied is never deleted under the copy). A reader that looked a chunk up
just before it moved finds a hole or no pack: it looks it up again (`ChunkStore.settled`,
`PackBackend._moved`). A second repack fails at once on the repack lock. Moves commit
every SYNC_BYTES: a repack killed midway keeps what it committed; its unfinished pack is
unlinked, and copies it had unnamed but not yet punched are punched, by the next
`PackBackend.recover` (any backup of any volume runs it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

from cairn.errors import Corruption
from cairn.store.backends.packs import Location, PackBackend
from cairn.store.blockmap import diff
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO, chunk_name
from cairn.store.locks import FileLock
from cairn.store.marks import live_points
from cairn.store.phases import Progress, phase
from cairn.store.repository import Repository

MIN_READ = 2 * 1024 * 1024
"""A read carrying fewer of a point's bytes than this is sparse (half of a full read)."""
DENSE = 0.75
"""A read in which a point's bytes are less than this share of those read is sparse."""
MIN_SPARSE = 16
"""Sparse reads below which a point is left as it is."""
COMPACT = 0.75
"""A pack the moves left with less than this share of its bytes live is rewritten whole."""
SYNC_BYTES = 64 * 1024 * 1024
"""Bytes moved between two commits: what a repack killed midway copies again."""

Read = list[tuple[str, Location]]


@dataclass
class PointRepack:
    """What a repack did for one point."""

    volume: str
    point: str
    reads_before: int
    """the reads a restore of the point made before (`PackBackend.reads`)"""
    sparse_before: int
    """of those, the sparse ones"""
    reads_after: int = 0
    moved_chunks: int = 0
    moved_bytes: int = 0


@dataclass
class RepackResult:
    points: list[PointRepack] = field(default_factory=list)
    compacted_packs: int = 0
    """packs the moves left less than COMPACT live, rewritten whole and unlinked"""
    compacted_chunks: int = 0
    compacted_bytes: int = 0
    seconds: float = 0.0
    skipped: str = ""
    """why nothing was looked at (a repository without packs), else empty"""

    @property
    def moved_chunks(self) -> int:
        return sum(p.moved_chunks for p in self.points)

    @property
    def moved_bytes(self) -> int:
        return sum(p.moved_bytes for p in self.points)

    def to_json(self) -> dict[str, object]:
        return {"points": [asdict(p) for p in self.points], "seconds": self.seconds,
                "skipped": self.skipped or None, "moved_chunks": self.moved_chunks,
                "moved_bytes": self.moved_bytes, "compacted_packs": self.compacted_packs,
                "compacted_chunks": self.compacted_chunks,
                "compacted_bytes": self.compacted_bytes}


def repack(repo: Repository, volumes: list[str] | None = None, dry_run: bool = False,
           min_sparse: int = MIN_SPARSE, progress: Progress | None = None) -> RepackResult:
    """Gather the sparsely read chunks of the newest point of ``volumes`` (default: every
    volume) into new packs, for each point read in ``min_sparse`` sparse reads or more,
    then compact the packs that left sparse; with ``dry_run`` only say what would move.
    ``progress`` is told each phase: the volumes looked at, then the packs compacted."""
    start = time.monotonic()
    backend = repo.chunks.backend
    if repo.remote is not None or not isinstance(backend, PackBackend):
        return RepackResult(skipped="this repository keeps one file or object per chunk: "
                                    "there are no packs to repack")
    result = RepackResult()
    names = volumes if volumes is not None else [v.name for v in repo.catalog.volumes()]
    hot = [(name, _newest(repo, name)) for name in names]
    with ExitStack() as locks:
        if not dry_run:  # a dry run only reads: it may run beside a repack
            locks.enter_context(FileLock(repo.path / "locks" / "repack.lock",
                                         "repack").acquire())
            locks.enter_context(repo.chunk_lock())
        work = _Pass(repo, backend, min_sparse, dry_run)
        with phase(progress, len(hot), "volumes' newest points gathered") as advance:
            for volume, point in hot:
                if point is not None:
                    result.points.append(work.gather(volume, point))
                advance(1)
        if not dry_run:
            work.compact(result, progress)
    result.seconds = time.monotonic() - start
    return result


def _newest(repo: Repository, volume: str) -> RecoveryPoint | None:
    live = live_points(repo, repo.volume(volume).id)
    return max(live, key=lambda p: p.seq) if live else None


class _Pass:
    """One repack: the packs it took chunks from are compacted at its end."""

    def __init__(self, repo: Repository, backend: PackBackend, min_sparse: int,
                 dry_run: bool) -> None:
        self.repo = repo
        self.backend = backend
        self.min_sparse = min_sparse
        self.dry_run = dry_run
        self.sources: set[str] = set()

    def gather(self, volume: str, point: RecoveryPoint) -> PointRepack:
        """Move what ``point`` reads sparsely, if that is ``min_sparse`` reads or more."""
        names = _chunk_names(self.repo, point)
        reads = self.backend.reads(names)
        sparse = [r for r in reads if _sparse(r)]
        done = PointRepack(volume, point.id, len(reads), len(sparse), len(reads))
        if not sparse or len(sparse) < self.min_sparse:
            return done
        chosen = _in_written_order(self.backend, [item for r in sparse for item in r])
        if self.dry_run:
            done.moved_chunks = len(chosen)
            done.moved_bytes = sum(loc[2] for _name, loc in chosen)
            return done
        moved = self.move(chosen)
        done.moved_chunks = len(moved)
        done.moved_bytes = sum(loc[2] for loc in moved)
        done.reads_after = len(self.backend.reads(names))
        return done

    def move(self, chosen: Read) -> list[Location]:
        moved: list[Location] = []
        for group in _groups(chosen):
            moved += _move(self.repo, self.backend, group)
        self.sources |= {loc[0] for loc in moved}
        return moved

    def compact(self, result: RepackResult, progress: Progress | None) -> None:
        """Rewrite whole the packs the moves left less than COMPACT live, so they go.

        The chunks that stayed sit between holes now: reading them zero-fills the holes
        (or splits reads at them), which costs the older points that read those packs,
        and a hole gives back only the file-system blocks no neighbour shares. Moved in
        written order like the rest, they read as before, and their packs are unlinked.
        """
        usage = self.backend.usage(self.sources)
        sparse = {pack for pack, (live, size) in usage.items() if live < COMPACT * size}
        with phase(progress, len(sparse), "packs left sparse, compacted") as advance:
            if not sparse:
                return
            moved = self.move(_in_written_order(self.backend, self.backend.objects_in(sparse)))
            advance(len(sparse))
        result.compacted_packs = len(sparse)
        result.compacted_chunks = len(moved)
        result.compacted_bytes = sum(loc[2] for loc in moved)


def _chunk_names(repo: Repository, point: RecoveryPoint) -> list[str]:
    """The point's chunks: its block-map nodes and its blocks, each once."""
    digests = {h for _slot, _old, h in diff(repo.nodes, None, repo.tree(point))
               if h is not None and h != ZERO}
    return [chunk_name(d) for d in digests]


def _sparse(read: Read) -> bool:
    useful = sum(loc[2] for _name, loc in read)
    span = read[-1][1][1] + read[-1][1][2] - read[0][1][1]
    return useful < MIN_READ or useful < DENSE * span


def _in_written_order(backend: PackBackend, chosen: Read) -> Read:
    """``chosen`` by when its pack was written (its last write), then place in the pack."""
    ages = {pack: backend.written(pack) for pack in {loc[0] for _name, loc in chosen}}
    return sorted(chosen, key=lambda item: (ages[item[1][0]], item[1][0], item[1][1]))


def _groups(chosen: Read) -> Iterator[Read]:
    """``chosen`` in runs of about SYNC_BYTES, each moved and committed at once."""
    group: Read = []
    size = 0
    for item in chosen:
        group.append(item)
        size += item[1][2]
        if size >= SYNC_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


def _move(repo: Repository, backend: PackBackend, group: Read) -> list[Location]:
    """Copy ``group`` to new packs, in its order, and commit; returns what moved."""
    stored: dict[str, bytes] = {}

    def keep(name: str, data: bytes) -> None:
        stored[name] = bytes(data)

    left = [name for name, _loc in group]
    while left:  # neighbours in one read; a missing chunk stops `get_many`, not the move
        try:
            for _ in backend.get_many(left, keep):
                pass
        except KeyError as exc:
            if str(exc.args[0]) not in left:
                raise
            stored[str(exc.args[0])] = b""  # missing: left where it is, for verify to name
        left = [name for name in left if name not in stored]
    moved: list[Location] = []
    for name, loc in group:
        data = stored.get(name, b"")
        if data and _intact(repo, name, data):
            backend.relocate(name, data, loc)
            moved.append(loc)
    backend.sync()
    return moved


def _intact(repo: Repository, name: str, data: bytes) -> bool:
    try:
        repo.chunks.checked(bytes.fromhex(name.rsplit("/", 1)[1]), data)
    except Corruption:
        return False
    return True
