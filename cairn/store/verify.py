"""Checking a repository: catalog, reference accounting, chunk presence and bytes.

The expected reference counts are recomputed from scratch by the same rule ingest uses
(one run per slot change between consecutive points, see `runs`) and compared with the
catalog's counts: any drift means a bug or damage, and is reported, never fixed silently.
With ``read_data`` every chunk is read and hash-checked; without it every chunk must be
indexed and, for packs, lie wholly inside its pack file.

Damage never stops the check: a block-map node that cannot be read is itself a damaged
chunk, and the walk goes on past it. Every damaged chunk is quarantined in the catalog
(so the next backup stores a fresh copy, see `ingest`) and traced to the points whose
images it breaks, by walking each volume's points in order and following the slots that
hold damaged chunks. Chunks quarantined earlier are always re-read: those a backup healed
since are reported with the points they healed, then forgotten.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from cairn.errors import Corruption
from cairn.meter import Meter
from cairn.store import runs
from cairn.store.backends.packs import PackBackend
from cairn.store.blockmap import NodeCache, Tree, diff
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO, chunk_name
from cairn.store.cloud_counts import uncounted, view
from cairn.store.repository import Repository
from cairn.units import human_bytes


@dataclass
class Report:
    points: int = 0
    chunks: int = 0
    bytes_read: int = 0
    problems: list[str] = field(default_factory=list)
    damaged: dict[str, list[str]] = field(default_factory=dict)
    healed: dict[str, list[str]] = field(default_factory=dict)
    orphans: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged_points(self) -> list[str]:
        return sorted({p for pts in self.damaged.values() for p in pts})

    @property
    def healed_points(self) -> list[str]:
        hurt = set(self.damaged_points)
        return sorted({p for pts in self.healed.values() for p in pts} - hurt)

    def lines(self) -> list[str]:
        out = [f"checked {self.points} point(s), {self.chunks} chunk(s)"
               + (f", read {human_bytes(self.bytes_read)}" if self.bytes_read else "")]
        out += [f"problem: {p}" for p in self.problems]
        out += [f"damaged chunk {h} hurts point(s): {', '.join(pts) or '(none)'}"
                for h, pts in self.damaged.items()]
        out += [f"healed chunk {h} (a backup stored it again) for point(s): "
                f"{', '.join(pts) or '(none)'}" for h, pts in self.healed.items()]
        if self.healed_points:
            out.append(f"healed point(s): {', '.join(self.healed_points)}")
        if self.damaged_points:
            out.append(f"damaged point(s): {', '.join(self.damaged_points)}: back up their "
                       "volumes again to heal what the source still holds, `cairn restore "
                       "--ignore-damage` what they keep, or delete them")
        if self.orphans:
            out.append(f"note: {self.orphans} chunk(s) in storage that no point, backup or "
                       "queued delete knows (space only; nothing is at risk)")
        out.append("no problems found" if self.ok else f"{len(self.problems)} problem(s) found")
        return out

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "points": self.points, "chunks": self.chunks,
                "bytes_read": self.bytes_read, "problems": self.problems,
                "damaged": self.damaged, "damaged_points": self.damaged_points,
                "healed": self.healed, "healed_points": self.healed_points,
                "orphans": self.orphans}


def _lines(repo: Repository) -> list[list[RecoveryPoint]]:
    return [repo.catalog.points(v.id) for v in repo.catalog.volumes()]


class _Nodes(NodeCache):
    """Block-map nodes that read as childless when damaged, remembering which were."""

    def __init__(self, repo: Repository) -> None:
        self.broken: dict[bytes, str] = {}

        def fetch(digest: bytes) -> bytes:
            try:
                return repo.chunks.get(digest)
            except Corruption as exc:
                self.broken[digest] = str(exc)
                return b""

        super().__init__(fetch, tolerant=True)

    def damaged(self, digest: bytes, problem: str) -> list[bytes]:
        self.broken.setdefault(digest, problem)
        return []


def expected_refs(repo: Repository, nodes: NodeCache) -> Counter[bytes]:
    """Every chunk's runs, from the block maps of the points of the volumes the catalog
    counts (a cloud cache counts only some: `cloud_counts`)."""
    expected: Counter[bytes] = Counter()
    skip = uncounted(repo)
    for points in _lines(repo):
        if points and points[0].volume_id in skip:
            continue
        prev: Tree | None = None
        for p in points:
            tree = repo.tree(p)
            expected.update(runs.ingest_increments(nodes, prev, tree))
            prev = tree
    return expected


def _point_chunks(repo: Repository, nodes: NodeCache, point: RecoveryPoint) -> set[bytes]:
    return {h for _slot, _old, h in diff(nodes, None, repo.tree(point))
            if h is not None and h != ZERO}


def hurt_points(repo: Repository, damaged: set[bytes]) -> dict[bytes, list[str]]:
    """Which points read each damaged chunk; unreadable nodes read as empty here."""
    nodes = _Nodes(repo)
    hurt: dict[bytes, list[str]] = {h: [] for h in damaged}
    for points in _lines(repo):
        holding: dict[tuple[int, int], bytes] = {}
        prev: Tree | None = None
        for p in points:
            tree = repo.tree(p)
            for slot, old, new in diff(nodes, prev, tree):
                if old in damaged:
                    holding.pop(slot, None)
                if new in damaged:
                    holding[slot] = new
            for digest in set(holding.values()):
                hurt[digest].append(p.id)
            prev = tree
    return hurt


def _orphans(repo: Repository) -> int:
    """Chunk objects the catalog neither counts, pins nor queues for deletion.

    On a local repository they can only come from outside cairn or a bug; on a cloud one
    they are also a replication in flight from another node, so they are counted, not
    judged.
    """
    known = {chunk_name(h) for h in repo.catalog.chunk_refs()}
    known |= {chunk_name(h) for h in repo.catalog.pending_free()}
    known |= {chunk_name(h) for h in repo.catalog.pinned()}
    return sum(1 for name in repo.chunks.backend.list("chunks") if name not in known)


Checked = tuple[bytes, str | None, int]
"""A chunk, what is wrong with it (None: nothing), and the bytes read to find out."""


def _look_up_all(repo: Repository, wanted: set[bytes]) -> Iterator[Checked]:
    backend = repo.chunks.backend
    short = set(backend.short_objects()) if isinstance(backend, PackBackend) else set()

    def look(digest: bytes) -> Checked:
        name = chunk_name(digest)
        if name in short:
            return digest, "its pack file is missing or shorter than the index says", 0
        return digest, None if backend.exists(name) else "missing", 0

    with ThreadPoolExecutor(4) as pool:
        yield from pool.map(look, wanted)


def _read_all(repo: Repository, wanted: set[bytes]) -> Iterator[Checked]:
    """Every chunk read and hash-checked, in the order the backend reads fastest.

    `Backend.get_many` stops at a missing object; it is reported and the rest read on.
    """
    by_name = {chunk_name(d): d for d in wanted}

    def check(name: str, stored: bytes) -> tuple[str, Checked]:
        digest = by_name[name]
        try:
            repo.chunks.settled(digest, stored)
        except Corruption as exc:
            return name, (digest, str(exc), len(stored))
        return name, (digest, None, len(stored))

    left = dict(by_name)
    while left:
        try:
            for name, checked in repo.chunks.backend.get_many(list(left), check):
                del left[name]
                yield checked
        except KeyError as exc:
            yield by_name[str(exc.args[0])], "missing", 0
            del left[str(exc.args[0])]


def _check_counts(report: Report, refs: dict[bytes, int], expected: Counter[bytes]) -> None:
    for digest, count in expected.items():
        have = refs.get(digest)
        if have is None:
            report.problems.append(f"chunk {digest.hex()} is needed but has no catalog row")
        elif have != count:
            report.problems.append(f"chunk {digest.hex()} counts {have} runs, expected {count}")
    for digest, have in refs.items():
        if digest not in expected and have > 0:
            report.problems.append(f"chunk {digest.hex()} counts {have} runs but no point "
                                   "uses it")


def _scope(repo: Repository, report: Report, point: RecoveryPoint | None,
           nodes: _Nodes) -> set[bytes]:
    """The chunks to check (and, for the whole repository, the accounting checked)."""
    if point is not None:
        report.points = 1
        return _point_chunks(repo, nodes, point)
    report.points = len(repo.catalog.points())
    with view(repo):  # a cloud cache's uncounted volumes counted, for this check only
        expected = expected_refs(repo, nodes)
        if nodes.broken:
            report.problems.append(f"{len(nodes.broken)} block-map node(s) cannot be read; "
                                   "reference counts not checked until they are healed")
        else:
            _check_counts(report, repo.catalog.chunk_refs(), expected)
        report.orphans = _orphans(repo)
    return set(expected) | set(nodes.broken)


def in_slice(digest: bytes, subset: tuple[int, int]) -> bool:
    """Whether a chunk is in slice ``k`` of ``n``: hashes spread chunks evenly, so reading
    slice 0, 1, ... n-1 on n nights reads every chunk once."""
    k, n = subset
    return int.from_bytes(digest[:8], "big") % n == k


def verify(repo: Repository, point: RecoveryPoint | None = None, read_data: bool = False,
           progress: Meter | None = None,
           subset: tuple[int, int] | None = None) -> Report:
    """Check ``repo`` (or one point); ``subset`` ``(k, n)`` checks only slice k of n. A
    cloud repository's cache is first synced in full: what was changed in the bucket
    behind cairn's back (no feed entry) is read, and refused if altered, now."""
    if repo.remote is not None and point is None:
        repo.remote.sync(repo, full=True)
    report = Report()
    integrity = repo.catalog.integrity_check()
    if integrity != "ok":
        report.problems.append(f"catalog integrity check failed: {integrity}")
    repo.record_damage()
    quarantined = set(repo.catalog.bad_chunks()) | set(repo.catalog.healed_chunks())
    nodes = _Nodes(repo)
    wanted = _scope(repo, report, point, nodes)
    if subset is not None:
        wanted = {d for d in wanted if in_slice(d, subset)}
    report.chunks = len(wanted)
    bad = dict(nodes.broken)
    recheck = (quarantined & wanted) - bad.keys()
    if progress and read_data:
        progress.expect(_stored_bytes(repo, wanted - bad.keys()))
    checked = _read_all(repo, wanted - bad.keys()) if read_data else _look_up_all(
        repo, wanted - bad.keys() - recheck)
    for digest, problem, nbytes in checked:
        report.bytes_read += nbytes
        if progress and nbytes:
            progress(nbytes)
        if problem is not None:
            bad[digest] = problem
    if not read_data:
        for digest, problem, _nbytes in _read_all(repo, recheck):
            if problem is not None:
                bad[digest] = problem
    report.problems += [f"chunk {h.hex()}: {why}" for h, why in bad.items()]
    _settle_quarantine(repo, report, point, bad, quarantined & wanted)
    return report


def _stored_bytes(repo: Repository, digests: set[bytes]) -> int:
    """What reading ``digests`` reads (chunks of unknown size count nothing)."""
    return sum(stored for _size, stored in repo.catalog.chunk_sizes(list(digests)).values())


def _settle_quarantine(repo: Repository, report: Report, point: RecoveryPoint | None,
                       bad: dict[bytes, str], quarantined: set[bytes]) -> None:
    """Quarantine what is damaged now, report who it hurts, and report (then forget) the
    quarantined chunks that read well again: a backup healed them."""
    healed = set(repo.catalog.healed_chunks()) & quarantined - bad.keys()
    if bad and not repo.catalog.note_bad(bad):
        repo.chunks.keep_damage(bad)
    if not (bad or healed):
        repo.catalog.clear_bad(list(quarantined))
        return
    hurt = hurt_points(repo, set(bad) | healed)
    if point is not None:
        hurt = {h: [p for p in pts if p == point.id] for h, pts in hurt.items()}
    report.damaged = {h.hex(): pts for h, pts in hurt.items() if h in bad}
    report.healed = {h.hex(): pts for h, pts in hurt.items() if h in healed}
    repo.catalog.clear_bad(list(quarantined - bad.keys()))
