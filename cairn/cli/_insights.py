"""What the file-browsing commands (ls, cat, restore-files, diff, mount) share.

They all open a point of a repository as a disk and name files with the ``[PART:]/path``
syntax of `cairn.insights.paths`; the help text for that syntax lives here once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cairn.cli._common import add_point as add_point
from cairn.insights.disk import Volume
from cairn.insights.points import open_point
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository

PATH_SYNTAX = (
    "Paths are [PART:]/path. PART is a partition number as `cairn ls POINT` shows it "
    "(1, 2, ...; 'p1' works too; 0 is a disk without a partition table), e.g. 1:/etc/hosts "
    "or p2:/EFI. Leave PART out when the point holds one readable file system: /etc/hosts."
)


@contextmanager
def point_disk(repo: Repository, ref: str) -> Iterator[tuple[RecoveryPoint, list[Volume]]]:
    """The point ``ref`` names and its partitions, file systems open, closed on exit."""
    point = repo.resolve(ref)
    with open_point(repo, point) as volumes:
        yield point, volumes
