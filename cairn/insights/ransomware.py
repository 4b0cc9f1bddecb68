"""Ransomware detection on every new point: cheap signals first, a look at changed files after.

Step 1, from what the backup already knows (always, a few milliseconds, no chunk read): the
blocks that changed since the volume's previous point come from the tree diff, and each
chunk's plain and stored sizes in the catalog say whether zstd could shrink it. The share
of changed blocks that *turned* incompressible (held compressible data before,
incompressible data now) is compared with the volume's own history (table
``point_signals``, owned here): encrypting files in place does exactly that to every block
it touches, while normal churn rarely does (a random or compressed file rewritten was
incompressible before; new files land on empty blocks).

Step 2, only when step 1 looks wrong (or ``deep`` is asked; `ransomware_files`, loaded only
then): the file systems of the two points are compared (`cairn.insights.diff`, which reads
only files whose blocks changed) and each of these makes a reason:

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

import time
from dataclasses import dataclass, field

from cairn.store import blockmap
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO
from cairn.store.repository import Repository

_TABLE = """CREATE TABLE IF NOT EXISTS point_signals(
    point_id TEXT PRIMARY KEY,
    volume_id INTEGER NOT NULL,
    changed_blocks INTEGER NOT NULL,
    turned_blocks INTEGER NOT NULL)"""
SAMPLE_BLOCKS = 128
"""Changed blocks looked at, at most: enough to estimate a share."""
HISTORY = 10
MIN_BLOCKS = 16


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
    """Median turned share of the volume's last points (None: no history yet); by hand,
    since `statistics` costs every backup's start-up more than this does."""
    rows = repo.catalog.db.execute(
        "SELECT changed_blocks, turned_blocks FROM point_signals WHERE volume_id=? "
        "AND point_id != ? AND changed_blocks >= ? ORDER BY rowid DESC LIMIT ?",
        (point.volume_id, point.id, MIN_BLOCKS, HISTORY)).fetchall()
    if not rows:
        return None
    shares = sorted(b / a for a, b in rows)
    middle = len(shares) // 2
    return shares[middle] if len(shares) % 2 else (shares[middle - 1] + shares[middle]) / 2


def _block_signal(repo: Repository, prev: RecoveryPoint, point: RecoveryPoint,
                  finding: Finding) -> None:
    """Changed blocks, and how many of them (from a sample) turned incompressible."""
    pairs = [(old, new) for (level, _i), old, new in blockmap.diff(repo.nodes, repo.tree(prev),
                                                                  repo.tree(point))
             if level == 0 and new != ZERO]
    finding.changed_blocks = len(pairs)
    sample = pairs[:: max(1, len(pairs) // SAMPLE_BLOCKS)][:SAMPLE_BLOCKS]
    sizes = repo.catalog.chunk_sizes([h for pair in sample for h in pair if h != ZERO])

    def raw(digest: bytes) -> bool | None:  # None: sizes unknown
        known = sizes.get(digest)
        return None if known is None else repo.chunks.stored_raw(*known)

    turned = sum(1 for old, new in sample if old != ZERO and raw(new) and raw(old) is False)
    finding.turned_blocks = round(turned * len(pairs) / len(sample)) if sample else 0


def _suspicious_blocks(finding: Finding) -> bool:
    if finding.changed_blocks < MIN_BLOCKS:
        return False
    baseline = finding.baseline if finding.baseline is not None else 0.0
    return finding.share >= 0.3 and finding.share >= baseline + 0.2


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
        from cairn.insights.ransomware_files import scan  # only when the blocks look wrong

        finding.reasons = scan(repo, prev, point)
    if finding.reasons and _suspicious_blocks(finding):
        finding.reasons.insert(0, f"{finding.share:.0%} of {finding.changed_blocks} changed "
                                  "blocks turned incompressible (usually "
                                  f"{finding.baseline or 0:.0%})")
    if finding.changed_blocks >= MIN_BLOCKS:  # `_history` reads no other: spare the commit
        with repo.catalog.transaction() as db:
            db.execute("INSERT OR REPLACE INTO point_signals(point_id, volume_id, changed_blocks, "
                       "turned_blocks) VALUES(?, ?, ?, ?)",
                       (point.id, point.volume_id, finding.changed_blocks,
                        finding.turned_blocks))
    if finding.reasons:
        from cairn.store import marks

        marks.flag(repo, point, finding.reasons)
    finding.seconds = time.perf_counter() - started
    return finding
