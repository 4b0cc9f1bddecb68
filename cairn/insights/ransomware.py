"""Ransomware detection on every new point: cheap signals first, a look at changed files after.

Step 1, from what the backup already knows (always, a few milliseconds): the blocks that
changed since the volume's previous point come from the tree diff, and each chunk's header
says whether zstd could shrink it. The share of changed blocks that *turned*
incompressible (held compressible data before, incompressible data now) is compared with
the volume's own history (table ``point_signals``, owned here): encrypting files in place
does exactly that to every block it touches, while normal churn rarely does (a random or
compressed file rewritten was incompressible before; new files land on empty blocks).

Step 2, only when step 1 looks wrong (or ``deep`` is asked): the file systems of the two
points are compared (`cairn.insights.diff`, which reads only files whose blocks changed)
and each of these makes a reason:

- files rewritten in place whose content is now high-entropy where it was not (an
  incompressible sample now, a compressible one before; mtime is not trusted, since tools
  put it back);
- many files renamed to one new extension (``a.doc`` -> ``a.doc.locked``);
- files whose names ransom notes use (``HOW_TO_DECRYPT.txt``, ``_readme.txt`` ...);
- mass deletion: many files gone, far more than were added.

Normal churn must not flag, which is why each rule wants a before/after contrast or a count:
a package upgrade replaces files with files of the same kind, log rotation renames to
numbered or compressed names, a database rewrites low-entropy pages, a new archive is an
*added* file, and a random-data file rewritten in place was high-entropy before.
"""

from __future__ import annotations

import re
import statistics
import time
import zlib
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cairn.insights.fs import FILE
from cairn.store import blockmap, marks
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import CODEC_RAW, ENCRYPTED, ZERO, chunk_name
from cairn.store.repository import Repository

if TYPE_CHECKING:
    from cairn.insights.diff import Diff
    from cairn.insights.fs import FileSystem

_TABLE = """CREATE TABLE IF NOT EXISTS point_signals(
    point_id TEXT PRIMARY KEY,
    volume_id INTEGER NOT NULL,
    changed_blocks INTEGER NOT NULL,
    turned_blocks INTEGER NOT NULL)"""
SAMPLE_BLOCKS = 128
"""New chunks whose header is looked at, at most: enough to estimate a share."""
HISTORY = 10
MIN_BLOCKS = 16
ENTROPY_SAMPLE = 16 * 1024
MIN_FILE = 1024
MIN_REWRITTEN = 5
MIN_RENAMED = 5
MIN_DELETED = 100
_HIGH = 0.95  # zlib output / input above this: no redundancy left (encrypted or compressed)
_LOW = 0.85
_ROTATION_EXTENSIONS = {"gz", "bz2", "xz", "zst", "old", "bak", "tmp", "swp", "dpkg-old",
                        "dpkg-new", "dpkg-dist", "ucf-old", "ucf-dist", "log"}
_NOTES = re.compile(
    r"(how|help)[ _-]?to[ _-]?(decrypt|recover|restore|unlock)"
    r"|(decrypt|recover|restore)[ _-]?(my|your|all)?[ _-]?files"
    r"|^_readme\.txt$"
    r"|read[ _-]?me[ _-]?(for|to)[ _-]?decrypt"
    r"|ransom|decrypt[ _-]?instruction|files[ _-]?(are[ _-]?)?encrypted",
    re.IGNORECASE)


@dataclass
class Finding:
    """What detection saw in one point; ``reasons`` empty means nothing suspicious."""

    point: str
    changed_blocks: int = 0
    turned_blocks: int = 0
    """Changed blocks that held compressible data and now hold incompressible data."""
    baseline: float | None = None
    scanned: bool = False
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def share(self) -> float:
        return self.turned_blocks / self.changed_blocks if self.changed_blocks else 0.0


def _history(repo: Repository, point: RecoveryPoint) -> float | None:
    """Median turned share of the volume's last points (None: no history yet)."""
    rows = repo.catalog.db.execute(
        "SELECT changed_blocks, turned_blocks FROM point_signals WHERE volume_id=? "
        "AND point_id != ? AND changed_blocks >= ? ORDER BY rowid DESC LIMIT ?",
        (point.volume_id, point.id, MIN_BLOCKS, HISTORY)).fetchall()
    return statistics.median(b / a for a, b in rows) if rows else None


def _raw(repo: Repository, digest: bytes) -> bool | None:
    """Whether the chunk is stored incompressible (its codec byte); None if unreadable."""
    try:
        stored = repo.chunks.backend.get(chunk_name(digest))
    except KeyError:
        return None
    return len(stored) > 3 and stored[3] & ~ENCRYPTED == CODEC_RAW


def _block_signal(repo: Repository, prev: RecoveryPoint, point: RecoveryPoint,
                  finding: Finding) -> None:
    """Changed blocks, and how many of them (from a sample) turned incompressible."""
    pairs = [(old, new) for (level, _i), old, new in blockmap.diff(repo.nodes, repo.tree(prev),
                                                                  repo.tree(point))
             if level == 0 and new != ZERO]
    finding.changed_blocks = len(pairs)
    sample = pairs[:: max(1, len(pairs) // SAMPLE_BLOCKS)][:SAMPLE_BLOCKS]
    turned = sum(1 for old, new in sample
                 if old != ZERO and _raw(repo, new) and _raw(repo, old) is False)
    finding.turned_blocks = round(turned * len(pairs) / len(sample)) if sample else 0


def _suspicious_blocks(finding: Finding) -> bool:
    if finding.changed_blocks < MIN_BLOCKS:
        return False
    baseline = finding.baseline if finding.baseline is not None else 0.0
    return finding.share >= 0.3 and finding.share >= baseline + 0.2


def _dense(fs: FileSystem, path: str, size: int) -> float | None:
    """zlib's output/input on a sample of the file (its start and its middle)."""
    try:
        with fs.open(path) as f:
            data = f.read(ENTROPY_SAMPLE)
            if size > 4 * ENTROPY_SAMPLE:
                f.seek(size // 2)
                data += f.read(ENTROPY_SAMPLE)
    except (OSError, ValueError):
        return None
    if len(data) < MIN_FILE:
        return None
    return len(zlib.compress(data, 1)) / len(data)


def _rewritten(old: FileSystem, new: FileSystem, changes: Diff) -> int:

    count = 0
    for m in changes.modified:
        if "content" not in m.changes or m.new.kind != FILE or m.new.size < MIN_FILE:
            continue
        now = _dense(new, m.path, m.new.size)
        before = _dense(old, m.path, m.old.size)
        if now is not None and before is not None and now >= _HIGH and before < _LOW:
            count += 1
    return count


def _renames(changes: Diff) -> tuple[str, int] | None:
    """The new extension most removed files reappear under, and how many did."""

    gone = {e.path for e in changes.removed if e.kind == FILE}
    found: Counter[str] = Counter()
    for e in changes.added:
        stem, dot, ext = e.path.rpartition(".")
        if e.kind != FILE or not dot or "/" in ext:
            continue
        ext = ext.lower()
        if stem in gone and not ext.isdigit() and ext not in _ROTATION_EXTENSIONS:
            found[ext] += 1
    return found.most_common(1)[0] if found else None


def _file_reasons(old: FileSystem, new: FileSystem, changes: Diff) -> list[str]:

    reasons = []
    rewritten = _rewritten(old, new, changes)
    if rewritten >= MIN_REWRITTEN:
        reasons.append(f"{rewritten} files rewritten in place with high-entropy content "
                       "(they were compressible before)")
    renamed = _renames(changes)
    if renamed is not None and renamed[1] >= MIN_RENAMED:
        reasons.append(f"{renamed[1]} files renamed to the new extension .{renamed[0]}")
    notes = sorted({e.name for e in changes.added if e.kind == FILE and _NOTES.search(e.name)})
    if notes:
        reasons.append(f"ransom note names appeared: {', '.join(notes[:5])}")
    removed = sum(1 for e in changes.removed if e.kind == FILE)
    added = sum(1 for e in changes.added if e.kind == FILE)
    if removed >= MIN_DELETED and removed > 4 * added:
        reasons.append(f"mass deletion: {removed} files removed, {added} added")
    return reasons


def _scan(repo: Repository, prev: RecoveryPoint, point: RecoveryPoint) -> list[str]:
    """Reasons from the file systems of both points, partition by partition."""
    from cairn.insights.diff import diff  # scans only
    from cairn.insights.points import BlockCache, changed_ranges, open_point

    changed = changed_ranges(repo, prev, point)
    cache = BlockCache(repo.chunks.get)
    reasons: list[str] = []
    with closing(cache), open_point(repo, prev, cache) as old, open_point(repo, point,
                                                                        cache) as new:
        before = {v.partition.index: v for v in old}
        for volume in new:
            was = before.get(volume.partition.index)
            if (was is None or was.filesystem is None or volume.filesystem is None
                    or (was.partition.start, was.partition.length)
                    != (volume.partition.start, volume.partition.length)):
                continue
            inside = changed.within(volume.partition.start, volume.partition.length)
            if not inside.overlaps(0, volume.partition.length):
                continue
            changes = diff(was.filesystem, volume.filesystem, inside)
            reasons += _file_reasons(was.filesystem, volume.filesystem, changes)
    return reasons


def examine(repo: Repository, point: RecoveryPoint, deep: bool = False) -> Finding:
    """Look at a new point against the one before it; flags it (`marks.flag`) when a
    reason is found, and records its block signal for the history of its volume."""
    started = time.perf_counter()
    finding = Finding(point.id)
    prev, _next = repo.catalog.neighbours(point)
    if prev is None:
        return finding
    repo.catalog.db.execute(_TABLE)
    finding.baseline = _history(repo, point)
    _block_signal(repo, prev, point, finding)
    if deep or _suspicious_blocks(finding):
        finding.scanned = True
        finding.reasons = _scan(repo, prev, point)
    if finding.reasons and _suspicious_blocks(finding):
        finding.reasons.insert(0, f"{finding.share:.0%} of {finding.changed_blocks} changed "
                                  "blocks turned incompressible (usually "
                                  f"{finding.baseline or 0:.0%})")
    with repo.catalog.transaction() as db:
        db.execute("INSERT OR REPLACE INTO point_signals(point_id, volume_id, changed_blocks, "
                   "turned_blocks) VALUES(?, ?, ?, ?)",
                   (point.id, point.volume_id, finding.changed_blocks, finding.turned_blocks))
    if finding.reasons:
        marks.flag(repo, point, finding.reasons)
    finding.seconds = time.perf_counter() - started
    return finding
