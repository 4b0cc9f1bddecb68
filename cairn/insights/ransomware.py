"""Ransomware detection on every new point: cheap signals first, a look at changed files after.

Step 1, from what the backup already knows (always, a few milliseconds, no chunk read): the
blocks that changed since the volume's previous point come from the tree diff, and each
chunk's plain and stored sizes in the catalog say whether zstd could shrink it. The share
of changed blocks that *turned* incompressible (held compressible data before,
incompressible data now) is compared with the volume's own history (kept
by `cairn.store.signals`): encrypting files in place does exactly that to every block
it touches, while normal churn rarely does (a random or compressed file rewritten was
incompressible before; new files land on empty blocks). Ransomware that writes encrypted
copies into free space and deletes the originals turns nothing: for it the share of changed
blocks that are new incompressible data ("dense") is compared with the volume's history too,
and opens the file scan, which then finds the originals renamed or deleted (an archive
being made opens it too, and the scan clears it: it is one added file).

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

from cairn.store import blockmap, signals
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO
from cairn.store.repository import Repository

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
    dense_blocks: int = 0
    """Changed blocks that now hold incompressible data, whatever they held before: what
    encrypted copies written to free space (then the originals deleted) look like."""
    baseline: float | None = None
    dense_baseline: float | None = None
    scanned: bool = False
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def share(self) -> float:
        return self.turned_blocks / self.changed_blocks if self.changed_blocks else 0.0

    @property
    def dense_share(self) -> float:
        return self.dense_blocks / self.changed_blocks if self.changed_blocks else 0.0


def _median(values: list[float]) -> float:
    """By hand: `statistics` costs every backup's start-up more than this does."""
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _history(repo: Repository, point: RecoveryPoint, finding: Finding) -> None:
    """The median turned and dense shares of the volume's last points (None: no history)."""
    rows = signals.recent(repo, point, MIN_BLOCKS, HISTORY)
    if rows:
        finding.baseline = _median([r.turned_blocks / r.changed_blocks for r in rows])
        finding.dense_baseline = _median([r.dense_blocks / r.changed_blocks for r in rows])


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
    dense = sum(1 for _old, new in sample if raw(new))
    scale = len(pairs) / len(sample) if sample else 0
    finding.turned_blocks, finding.dense_blocks = round(turned * scale), round(dense * scale)


def _turned_suspicious(finding: Finding) -> bool:
    """Compressible blocks turned incompressible, far beyond the volume's habit."""
    baseline = finding.baseline if finding.baseline is not None else 0.0
    return (finding.changed_blocks >= MIN_BLOCKS and finding.share >= 0.3
            and finding.share >= baseline + 0.2)


def _dense_suspicious(finding: Finding) -> bool:
    """Most changed blocks are new incompressible data, far beyond the volume's habit: an
    archive being made, or encrypted copies of files; only the file scan tells which (an
    archive is one added file; copies come with their originals deleted or renamed)."""
    baseline = finding.dense_baseline if finding.dense_baseline is not None else 0.0
    return (finding.changed_blocks >= MIN_BLOCKS and finding.dense_share >= 0.5
            and finding.dense_share >= baseline + 0.2)


def _block_reason(finding: Finding) -> str | None:
    """Why the changed blocks look wrong, or None when they look as usual."""
    if _turned_suspicious(finding):
        return (f"{finding.share:.0%} of {finding.changed_blocks} changed blocks turned "
                f"incompressible (usually {finding.baseline or 0:.0%})")
    if _dense_suspicious(finding):
        return (f"{finding.dense_share:.0%} of {finding.changed_blocks} changed blocks are "
                f"new incompressible data (usually {finding.dense_baseline or 0:.0%})")
    return None


def examine(repo: Repository, point: RecoveryPoint, deep: bool = False) -> Finding:
    """Look at a new point against the one before it; flags it (`marks.flag`) when a
    reason is found, and records its block signal for the history of its volume."""
    started = time.perf_counter()
    finding = Finding(point.id)
    prev, _next = repo.catalog.neighbours(point)
    if prev is None:
        return finding
    signals.ensure(repo)
    _history(repo, point, finding)
    _block_signal(repo, prev, point, finding)
    block_reason = _block_reason(finding)
    if deep or block_reason:
        finding.scanned = True
        from cairn.insights.ransomware_files import scan  # only when the blocks look wrong

        finding.reasons = scan(repo, prev, point)
    if finding.reasons and block_reason:
        finding.reasons.insert(0, block_reason)
    if finding.changed_blocks >= MIN_BLOCKS:  # `_history` reads no other: spare the commit
        signals.record(repo, point, signals.Signals(
            finding.changed_blocks, finding.turned_blocks, finding.dense_blocks))
    if finding.reasons:
        from cairn.store import marks

        marks.flag(repo, point, finding.reasons)
    finding.seconds = time.perf_counter() - started
    return finding
