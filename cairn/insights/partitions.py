"""The partitions of a disk image: GPT, MBR (with logical partitions), or one whole-disk volume.

Order of decisions, chosen so that a disk is never misread:
  1. a protective MBR entry (type 0xEE), or "EFI PART" at LBA 1 with no MBR at all: GPT.
     The primary header and its entry array must pass their CRC32 checks; if either fails,
     the backup header at the last LBA is tried. Sector sizes 512 and 4096 are recognised.
  2. a supported file system signature at byte 0: the whole disk is one file system (a FAT
     or NTFS boot sector also ends in 0x55AA and must not be taken for an MBR).
  3. 0x55AA at byte 510 and four sane entries: MBR; extended partitions are followed through
     their EBR chain, logical partitions are numbered from 5 as Linux does.
  4. otherwise the whole disk is returned as one volume, and opening it says what was found.

GPT layout (UEFI 2.x, all little-endian): header at LBA 1 = signature(8) revision(4)
header_size(4) header_crc32(4) reserved(4) my_lba(8) alternate_lba(8) first_usable(8)
last_usable(8) disk_guid(16) entries_lba(8) entry_count(4) entry_size(4) entries_crc32(4);
each entry = type_guid(16) unique_guid(16) first_lba(8) last_lba(8) attributes(8)
name(72, UTF-16LE). GUIDs are stored in mixed-endian form (`uuid.UUID(bytes_le=...)`).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

from cairn.errors import PartitionTableError
from cairn.insights import signature
from cairn.insights.volume import VolumeReader

WHOLE_DISK = 0
_MAX_GPT_ENTRIES_BYTES = 1 << 20
_MAX_LOGICAL = 128

GPT_TYPES: dict[str, str] = {
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI System",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux home",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "ca7d7ccb-63ed-4c53-861c-1742536059cc": "Linux LUKS",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery",
    "6a898cc3-1dd2-11b2-99a6-080020736631": "ZFS",
}

MBR_TYPES: dict[int, str] = {
    0x01: "FAT12",
    0x04: "FAT16 <32M",
    0x06: "FAT16",
    0x07: "NTFS/exFAT",
    0x0B: "FAT32",
    0x0C: "FAT32 (LBA)",
    0x0E: "FAT16 (LBA)",
    0x82: "Linux swap",
    0x83: "Linux",
    0x8E: "Linux LVM",
    0xEF: "EFI System",
    0xFD: "Linux RAID",
}
_EXTENDED = (0x05, 0x0F, 0x85)
_PROTECTIVE = 0xEE


@dataclass(frozen=True)
class Partition:
    """One volume of a disk. `start` and `length` are in bytes; `index` 0 is the whole disk."""

    index: int
    start: int
    length: int
    scheme: str
    type_id: str
    type_name: str
    label: str = ""
    uuid: str = ""

    def describe(self) -> str:
        """How messages name this volume: "partition 2 (offset 1048576, 64 MiB)"."""
        where = f"offset {self.start}, {_human(self.length)}"
        if self.index == WHOLE_DISK:
            return f"whole disk ({where})"
        return f"partition {self.index} ({where})"


def _human(n: int) -> str:
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def read_partitions(disk: VolumeReader) -> list[Partition]:
    """The volumes of `disk`, in table order; never empty for a non-empty disk.

    Raises `PartitionTableError` only when a GPT is announced but neither copy is intact.
    """
    sector0 = disk.pread(0, 512)
    has_mbr = sector0[510:512] == b"\x55\xaa"
    mbr_types = [sector0[446 + 16 * i + 4] for i in range(4)] if has_mbr else []
    if _PROTECTIVE in mbr_types or (not has_mbr and _find_gpt_sector(disk)):
        return _read_gpt(disk) or [_whole(disk)]
    if signature.identify(disk) is None and has_mbr:
        parts = _read_mbr(disk, sector0)
        if parts:
            return parts
    return [_whole(disk)]


def _whole(disk: VolumeReader) -> Partition:
    return Partition(WHOLE_DISK, 0, disk.size, "none", "", "whole disk")


def _find_gpt_sector(disk: VolumeReader) -> int | None:
    for sector in (512, 4096):
        if disk.pread(sector, 8) == b"EFI PART":
            return sector
    return None


def _read_gpt(disk: VolumeReader) -> list[Partition]:
    sector = _find_gpt_sector(disk)
    problems = []
    for size in (sector,) if sector else (512, 4096):
        try:
            return _gpt_from_header(disk, size, 1)
        except ValueError as e:
            problems.append(f"primary header: {e}")
        last_lba = disk.size // size - 1
        try:
            return _gpt_from_header(disk, size, last_lba)
        except ValueError as e:
            problems.append(f"backup header: {e}")
    raise PartitionTableError(
        "the disk has a GPT but it is damaged (" + "; ".join(problems) + "): "
        "repair the disk on the protected machine with `sgdisk --verify`/`gdisk`, or "
        "restore the whole image"
    )


def _gpt_from_header(disk: VolumeReader, sector: int, lba: int) -> list[Partition]:
    raw = disk.pread(lba * sector, sector)
    if raw[:8] != b"EFI PART":
        raise ValueError(f"no 'EFI PART' signature at LBA {lba}")
    if len(raw) < 92:
        raise ValueError(f"the header at LBA {lba} is cut short by the end of the disk")
    header_size, header_crc = struct.unpack_from("<II", raw, 12)
    if not 92 <= header_size <= sector:
        raise ValueError(f"header size {header_size} out of range")
    zeroed = raw[:16] + b"\0\0\0\0" + raw[20:header_size]
    if zlib.crc32(zeroed) != header_crc:
        raise ValueError("header CRC32 mismatch")
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", raw, 72)
    if entry_size < 128 or entry_size % 8 or count * entry_size > _MAX_GPT_ENTRIES_BYTES:
        raise ValueError(f"implausible entry array ({count} entries of {entry_size} bytes)")
    table = disk.pread(entries_lba * sector, count * entry_size)
    if len(table) != count * entry_size or zlib.crc32(table) != entries_crc:
        raise ValueError("partition entry array CRC32 mismatch")
    parts = []
    for i in range(count):
        entry = table[i * entry_size : (i + 1) * entry_size]
        type_guid = uuid.UUID(bytes_le=entry[:16])
        if type_guid.int == 0:
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        if last < first:
            raise ValueError(f"entry {i + 1} ends before it starts")
        name = entry[56:128].decode("utf-16-le", "replace").split("\0", 1)[0]
        type_id = str(type_guid)
        parts.append(
            Partition(
                index=i + 1,
                start=first * sector,
                length=(last - first + 1) * sector,
                scheme="gpt",
                type_id=type_id,
                type_name=GPT_TYPES.get(type_id, "unknown"),
                label=name,
                uuid=str(uuid.UUID(bytes_le=entry[16:32])),
            )
        )
    return parts


def _mbr_entries(sector: bytes) -> list[tuple[int, int, int, int]]:
    """(slot, type, first LBA, sector count) of the used entries; empty if any is insane."""
    entries = []
    for slot in range(4):
        status, kind, first, count = struct.unpack_from("<B3xB3xII", sector, 446 + 16 * slot)
        if status not in (0x00, 0x80):
            return []
        if kind and count:
            entries.append((slot, kind, first, count))
    return entries


def _mbr_partition(index: int, kind: int, start_lba: int, count: int) -> Partition:
    return Partition(
        index=index,
        start=start_lba * 512,
        length=count * 512,
        scheme="mbr",
        type_id=f"0x{kind:02x}",
        type_name=MBR_TYPES.get(kind, "unknown"),
    )


def _read_mbr(disk: VolumeReader, sector0: bytes) -> list[Partition]:
    disk_sectors = disk.size // 512
    parts = []
    for slot, kind, first, count in _mbr_entries(sector0):
        if first == 0 or first >= disk_sectors:
            return []
        if kind in _EXTENDED:
            parts.extend(_read_logical(disk, first))
        else:
            parts.append(_mbr_partition(slot + 1, kind, first, count))
    return sorted(parts, key=lambda p: p.index)


def _read_logical(disk: VolumeReader, extended_lba: int) -> list[Partition]:
    """Follow the EBR chain; a broken link ends the chain rather than failing the disk."""
    parts: list[Partition] = []
    ebr_lba = extended_lba
    seen: set[int] = set()
    while ebr_lba not in seen and len(parts) < _MAX_LOGICAL:
        seen.add(ebr_lba)
        ebr = disk.pread(ebr_lba * 512, 512)
        if len(ebr) < 512 or ebr[510:512] != b"\x55\xaa":
            break
        entries = _mbr_entries(ebr)
        logical = [e for e in entries if e[1] not in _EXTENDED]
        if logical:
            _, kind, first, count = logical[0]
            parts.append(_mbr_partition(5 + len(parts), kind, ebr_lba + first, count))
        link = [e for e in entries if e[1] in _EXTENDED]
        if not link:
            break
        ebr_lba = extended_lba + link[0][2]
    return parts
