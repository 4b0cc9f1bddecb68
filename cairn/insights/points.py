"""Recovery points as disks for insights, and what changed between two.

A point is read through the store's one `PointReader`: file-system libraries read in
small pieces (an inode, a directory block), many of them in the same 64 KiB block, and
its `BlockCache` fetches and decodes each block once. Two points opened side by side
share one cache, so the blocks they have in common are fetched once.

`changed_ranges` is why a diff is cheap: two points of a volume share every unchanged
subtree of their block maps, so the tree diff visits only what changed and names the
blocks that differ without reading any data. Insights then reads only the files whose
metadata or blocks are among them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

from cairn.errors import CairnError
from cairn.insights.diff import ChangedRanges, Diff, diff
from cairn.insights.disk import Volume, open_disk
from cairn.store import blockmap
from cairn.store.catalog import RecoveryPoint
from cairn.store.reader import BlockCache, PointReader
from cairn.store.repository import Repository


def changed_ranges(repo: Repository, a: RecoveryPoint, b: RecoveryPoint) -> ChangedRanges:
    """The byte ranges where ``a`` and ``b`` differ, from their block maps alone (no data read).

    Every level-0 slot the tree diff yields is one block that differs (or exists in only
    one of the points, when their sizes differ); adjacent blocks merge into one range.
    """
    bs = repo.block_size
    end = max(a.size, b.size)
    ranges: list[tuple[int, int]] = []
    for (level, index), _, _ in blockmap.diff(repo.nodes, repo.tree(a), repo.tree(b)):
        if level != 0:
            continue
        start = index * bs
        length = min(bs, end - start)
        if ranges and ranges[-1][0] + ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
        else:
            ranges.append((start, length))
    return ChangedRanges(ranges)


@contextmanager
def open_point(repo: Repository, point: RecoveryPoint,
               cache: BlockCache | None = None) -> Iterator[list[Volume]]:
    """The partitions of ``point`` with their file systems (or errors), closed on exit.

    Points opened side by side may share one ``cache`` (the caller then closes it).
    """
    with PointReader(repo, point, cache) as reader:
        volumes = open_disk(reader)
        try:
            yield volumes
        finally:
            for volume in volumes:
                if volume.filesystem is not None:
                    volume.filesystem.close()


@contextmanager
def open_pair(repo: Repository, a: RecoveryPoint, b: RecoveryPoint
              ) -> Iterator[tuple[list[Volume], list[Volume], ChangedRanges]]:
    """The volumes of ``a`` and of ``b`` side by side, sharing one cache, and the byte
    ranges where the points differ."""
    changed = changed_ranges(repo, a, b)
    cache = BlockCache(repo.chunks)
    with closing(cache), open_point(repo, a, cache) as old, open_point(repo, b, cache) as new:
        yield old, new, changed


@dataclass
class PartitionDiff:
    """What changed in one partition; ``error`` says why it could not be compared."""

    partition: int
    filesystem: str | None
    diff: Diff | None = None
    error: str | None = None


def diff_points(repo: Repository, a: RecoveryPoint, b: RecoveryPoint) -> list[PartitionDiff]:
    """Per partition of ``b`` (and any only in ``a``), the files added, removed, modified.

    A partition whose bytes did not change at all is not even walked. One that moved on
    the disk is compared file by file without the changed-ranges shortcut.
    """
    with open_pair(repo, a, b) as (old, new, changed):
        before = {v.partition.index: v for v in old}
        results = [_partition_diff(before.get(v.partition.index), v, changed) for v in new]
        after = {v.partition.index for v in new}
        results += [PartitionDiff(v.partition.index, None, error=f"{v.partition.describe()} "
                                  "is only in the first point")
                    for v in old if v.partition.index not in after]
    return sorted(results, key=lambda r: r.partition)


def _partition_diff(old: Volume | None, new: Volume, changed: ChangedRanges) -> PartitionDiff:
    part = new.partition
    kind = new.filesystem.kind if new.filesystem else None
    if old is None:
        return PartitionDiff(part.index, kind, error=f"{part.describe()} is only in the "
                             "second point")
    problem = new.error or old.error
    if problem is not None or old.filesystem is None or new.filesystem is None:
        return PartitionDiff(part.index, kind, error=str(problem))
    if old.filesystem.kind != new.filesystem.kind:
        return PartitionDiff(part.index, kind, error=f"{part.describe()} holds {kind} now and "
                             f"held {old.filesystem.kind} before: nothing to compare")
    same_place = (old.partition.start, old.partition.length) == (part.start, part.length)
    inside = changed.within(part.start, part.length) if same_place else None
    if inside is not None and not inside.overlaps(0, part.length):
        return PartitionDiff(part.index, kind, Diff())
    try:
        return PartitionDiff(part.index, kind, diff(old.filesystem, new.filesystem, inside))
    except CairnError as e:
        return PartitionDiff(part.index, kind, error=str(e))
