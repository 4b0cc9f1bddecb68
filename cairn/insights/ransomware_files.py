"""Step 2 of ransomware detection (`cairn.insights.ransomware`): the changed files.

Kept apart from step 1 because it needs the file-system readers, which every backup would
otherwise load for a look that runs only when the block signal looks wrong (or is asked for).
The rules, and why normal churn does not trip them, are in `cairn.insights.ransomware`.
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from typing import TYPE_CHECKING

from cairn.insights.diff import diff
from cairn.insights.fs import FILE
from cairn.insights.points import open_pair
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository

if TYPE_CHECKING:
    from cairn.insights.diff import Diff
    from cairn.insights.fs import FileSystem

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


def scan(repo: Repository, prev: RecoveryPoint, point: RecoveryPoint) -> list[str]:
    """Reasons from the file systems of both points, partition by partition."""
    reasons: list[str] = []
    with open_pair(repo, prev, point) as (old, new, changed):
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
