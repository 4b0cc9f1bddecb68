"""Backing up an image file or block device into a repository as a new point.

This is the direct path (`cairn backup` on the host that holds the repository); protected
machines send their changes through the appliance (`agent/`, `appliance/uploads.py`) and
end in the same `Ingest`.
"""

from __future__ import annotations

from pathlib import Path

from cairn.ops.detect import after_backup
from cairn.ops.progress import Progress, quiet
from cairn.sources.image import ImageSource, load_changed_ranges
from cairn.sources.sanity import check_source
from cairn.store.catalog import RecoveryPoint
from cairn.store.ingest import Ingest
from cairn.store.repository import Repository


def backup(repo: Repository, volume: str, source: Path, changed_ranges: Path | None = None,
           progress: Progress = quiet, force: bool = False) -> tuple[RecoveryPoint, list[str]]:
    """A new point of ``volume`` from ``source``, and why it is flagged as possible
    ransomware (`ops.detect`; empty when it is not). With ``changed_ranges`` (a change
    tracker's JSON list of ``[offset, length]``) only those ranges are read. A source that
    looks wrong (`sources.sanity`) is refused unless ``force``."""
    with ImageSource(source) as image:
        if not force:
            known = repo.catalog.volume(volume)
            latest = repo.catalog.latest(known.id) if known is not None else None
            check_source(image, str(source), latest.size if latest is not None else None)
        ranges = load_changed_ranges(changed_ranges, image.size) if changed_ranges else None
        total = sum(n for _, n in ranges) if ranges is not None else image.size
        with progress(total, f"backup {volume}") as advance:
            point = Ingest(repo, volume, image, progress=advance).run(ranges)
    finding = after_backup(repo, point)
    return point, finding.reasons if finding is not None else []
