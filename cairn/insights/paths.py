"""How a user names a file inside a disk that may hold several file systems.

Syntax: ``[PART:]/path``. ``PART`` is a partition number as `cairn ls POINT` shows it (GPT
and primary MBR partitions 1-4, logical MBR partitions from 5, as Linux numbers them),
written ``1`` or ``p1``; ``0`` is a disk without a partition table. The path is absolute
inside that file system, and ``..`` never climbs above its root. ``PART:`` may be left out
when the point holds exactly one readable file system (a whole-disk file system, or a disk
whose other partitions hold none, like a BIOS boot partition). A path that itself begins
with digits and a colon is reached by writing the partition (``1:/2:odd``) or a leading
slash (``/2:odd``).

The same numbers name the top-level folders of `cairn mount` (``p1``, ``p2``, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cairn.errors import UnknownPartition
from cairn.insights.disk import Volume
from cairn.insights.fs import FileSystem, split_path

_PREFIX = re.compile(r"^[pP]?(\d{1,3}):(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Location:
    """A parsed ``[PART:]/path``: the partition number (None: not given) and the path."""

    partition: int | None
    path: str

    def show(self, volumes: list[Volume]) -> str:
        return display(volumes, self.partition, self.path)


def parse(spec: str) -> Location:
    match = None if spec.startswith("/") else _PREFIX.match(spec)
    if match:
        partition, rest = int(match.group(1)), match.group(2)
    else:
        partition, rest = None, spec
    return Location(partition, "/" + "/".join(split_path(rest)))


def folder_name(volume: Volume) -> str:
    """The name of a partition's folder in a mount and its prefix in listings: ``p1``."""
    return f"p{volume.partition.index}"


def single(volumes: list[Volume]) -> Volume | None:
    """The one readable file system of the disk, when there is exactly one."""
    readable = [v for v in volumes if v.filesystem is not None]
    return readable[0] if len(readable) == 1 else None


def display(volumes: list[Volume], partition: int | None, path: str) -> str:
    """A path as the user would type it back: with ``p1:`` only where it is needed."""
    one = single(volumes)
    if partition is None or (one is not None and one.partition.index == partition):
        return path
    return f"p{partition}:{path}"


def select(volumes: list[Volume], location: Location) -> tuple[Volume, FileSystem]:
    """The volume and open file system ``location`` names; its error if it cannot be read."""
    numbers = ", ".join(str(v.partition.index) for v in volumes)
    if location.partition is None:
        volume = single(volumes) or (volumes[0] if len(volumes) == 1 else None)
        if volume is None:
            readable = [str(v.partition.index) for v in volumes if v.filesystem is not None]
            if not readable:
                raise UnknownPartition(
                    f"no partition of this point holds a readable file system (partitions: "
                    f"{numbers}): `cairn ls POINT` says what is on each")
            raise UnknownPartition(
                f"this point holds {len(readable)} file systems (partitions "
                f"{', '.join(readable)}): name one, e.g. {readable[0]}:{location.path}")
    else:
        found = [v for v in volumes if v.partition.index == location.partition]
        if not found:
            raise UnknownPartition(
                f"no partition {location.partition} in this point (it has {numbers}): "
                "`cairn ls POINT` lists them")
        volume = found[0]
    if volume.filesystem is None:
        assert volume.error is not None
        raise volume.error
    return volume, volume.filesystem
