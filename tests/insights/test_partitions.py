"""Partition tables as sfdisk writes them, damaged ones, and disks without a table."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from cairn.errors import PartitionTableError
from cairn.insights.partitions import WHOLE_DISK, read_partitions
from cairn.insights.volume import FileReader
from tests.insights import images
from tests.insights.conftest import Images

MIB = images.MIB


def parts_of(path: Path) -> list[tuple[int, int, int, str, str, str]]:
    with FileReader(path) as disk:
        return [
            (p.index, p.start, p.length, p.scheme, p.type_name, p.label)
            for p in read_partitions(disk)
        ]


def test_gpt_partitions_with_names_and_types(imgs: Images) -> None:
    assert parts_of(imgs.gpt) == [
        (1, 1 * MIB, 32 * MIB, "gpt", "Linux filesystem", "root"),
        (2, 33 * MIB, 8 * MIB, "gpt", "Linux filesystem", "broken"),
        (3, 41 * MIB, 40 * MIB, "gpt", "Microsoft basic data", "data"),
        (4, 81 * MIB, 16 * MIB, "gpt", "Microsoft basic data", "win"),
    ]


def test_mbr_with_logical_partitions(scratch: Path) -> None:
    disk = scratch / "mbr.img"
    images.sparse_file(disk, 64 * MIB)
    script = "".join(
        f"{disk}{n} : start={start}, size={size}, type={kind}\n"
        for n, start, size, kind in [
            (1, 2048, 20480, "83"),
            (2, 22528, 20480, "c"),
            (3, 43008, 61440, "5"),
            (5, 45056, 16384, "83"),
            (6, 63488, 16384, "82"),
        ]
    )
    images.subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(disk)],
        input="label: dos\n" + script, text=True, check=True, capture_output=True,
    )  # fmt: skip
    assert [(i, start, length, s, n) for i, start, length, s, n, _ in parts_of(disk)] == [
        (1, 2048 * 512, 10 * MIB, "mbr", "Linux"),
        (2, 22528 * 512, 10 * MIB, "mbr", "FAT32 (LBA)"),
        (5, 45056 * 512, 8 * MIB, "mbr", "Linux"),
        (6, 63488 * 512, 8 * MIB, "mbr", "Linux swap"),
    ]


@pytest.mark.parametrize("name", ["ext4", "fat", "ntfs", "xfs"])
def test_whole_disk_file_system_is_not_taken_for_a_table(imgs: Images, name: str) -> None:
    """A FAT or NTFS boot sector ends in 0x55AA like an MBR; it must still be one volume."""
    path = getattr(imgs, name)
    assert parts_of(path) == [(WHOLE_DISK, 0, path.stat().st_size, "none", "whole disk", "")]


def _corrupt(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_damaged_primary_gpt_falls_back_to_backup(imgs: Images, scratch: Path) -> None:
    disk = scratch / "disk.img"
    images.run("cp", "--sparse=always", imgs.gpt, disk)
    _corrupt(disk, 512 + 40)  # first_usable_lba in the primary header: CRC no longer matches
    assert parts_of(disk) == parts_of(imgs.gpt)


def test_both_gpt_copies_damaged_is_a_clear_error(imgs: Images, scratch: Path) -> None:
    disk = scratch / "disk.img"
    images.run("cp", "--sparse=always", imgs.gpt, disk)
    _corrupt(disk, 1024 + 20)  # primary entry array
    _corrupt(disk, disk.stat().st_size - 512 + 40)  # backup header
    with pytest.raises(PartitionTableError) as err:
        parts_of(disk)
    message = str(err.value)
    assert "primary header: partition entry array CRC32 mismatch" in message
    assert "backup header: header CRC32 mismatch" in message
    assert "\n" not in message


def test_gpt_header_crc_is_checked_over_header_size(imgs: Images) -> None:
    raw = imgs.gpt.read_bytes()[512:1024]
    header_size = int.from_bytes(raw[12:16], "little")
    zeroed = raw[:16] + b"\0" * 4 + raw[20:header_size]
    assert zlib.crc32(zeroed) == int.from_bytes(raw[16:20], "little")
