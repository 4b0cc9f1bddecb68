"""From a disk to its readable file systems, one partition's failure never hiding another's.

`open_filesystem` picks the reader by signature (never by partition type code) and turns
every failure into a `CairnError` naming the volume and what was found there. `open_disk`
does that for each partition and keeps the error beside the partition instead of raising,
so a listing shows the good partitions and says exactly what is wrong with the bad one.
"""

from __future__ import annotations

from dataclasses import dataclass

from cairn.errors import CairnError, UnknownFileSystem
from cairn.insights import signature
from cairn.insights.fs import FileSystem
from cairn.insights.libyal import LibyalFileSystem
from cairn.insights.partitions import Partition, read_partitions
from cairn.insights.volume import SliceReader, VolumeReader


@dataclass
class Volume:
    """One partition and either its open file system or the error that explains why not."""

    partition: Partition
    reader: VolumeReader
    filesystem: FileSystem | None = None
    error: CairnError | None = None


def open_filesystem(reader: VolumeReader, where: str = "volume") -> FileSystem:
    """The file system on `reader`; `where` names the volume in error messages."""
    kind = signature.identify(reader)
    if kind is None:
        raise UnknownFileSystem(
            f"{where}: no known file system ({signature.describe_unknown(reader)}); "
            "supported are ext2/3/4, XFS, NTFS and FAT"
        )
    if kind == signature.FAT:
        from cairn.insights.tsk import TskFileSystem  # pytsk3 loads in 10 ms: only for FAT

        return TskFileSystem(reader, kind, where)
    return LibyalFileSystem(reader, kind, where)


def open_disk(disk: VolumeReader) -> list[Volume]:
    """Every partition of `disk` with its file system or error; raises only for a bad table."""
    volumes = []
    for partition in read_partitions(disk):
        reader = SliceReader(disk, partition.start, partition.length)
        volume = Volume(partition, reader)
        try:
            volume.filesystem = open_filesystem(reader, partition.describe())
        except CairnError as e:
            volume.error = e
        volumes.append(volume)
    return volumes
