"""Failback: what a VM wrote to its clone becomes a new recovery point of the volume.

The clone is read as a backup source, so the new point goes through the one ingest path
(pins, runs, crash safety) and shares every unchanged block with the points before it.
When the clone's point is the volume's latest, only the blocks the VM wrote are read;
otherwise every block is read and compared with the latest point's hashes.
"""

from __future__ import annotations

from cairn.store.catalog import RecoveryPoint
from cairn.store.clones import Clone, CloneVolume
from cairn.store.ingest import Ingest
from cairn.store.repository import Repository


class CloneSource:
    """A clone as an ingest `Source`: its bytes are the point's, patched by the overlay."""

    def __init__(self, volume: CloneVolume) -> None:
        self.volume = volume

    @property
    def size(self) -> int:
        return self.volume.size

    @property
    def name(self) -> str:
        return f"clone {self.volume.clone.name}"

    def pread(self, offset: int, length: int) -> bytes:
        return self.volume.pread(offset, length)

    def data_extents(self) -> list[tuple[int, int]]:
        return [(0, self.volume.size)]


def keep_as_point(repo: Repository, clone: Clone) -> RecoveryPoint:
    """Commit the clone's current contents as the newest point of its point's volume."""
    with CloneVolume(repo, clone) as volume:
        base = volume.base.point
        latest = repo.catalog.latest(repo.volume(base.volume).id)
        ranges = volume.written_ranges() if latest is not None and latest.id == base.id \
            else None
        return Ingest(repo, base.volume, CloneSource(volume)).run(ranges)
