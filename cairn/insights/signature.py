"""Which file system a volume holds, told by its on-disk signature and nothing else.

Partition type codes lie (a "Linux" partition may hold FAT, a whole disk may have no table),
so insights always looks at the bytes. `identify` names a supported file system or returns
None; `describe_unknown` says what the bytes look like instead, so an error can tell the
user "this is LVM" or "this is all zeros" rather than just "unknown".

Signatures checked:
  ext2/3/4  magic 0xEF53 (little-endian) at byte 1080 (superblock at 1024, field at 56)
  XFS       b"XFSB" at byte 0
  NTFS      b"NTFS    " (OEM id) at byte 3
  FAT12/16/32  a BIOS parameter block: 0x55AA at 510, a jump at 0, sane bytes per sector,
            sectors per cluster, reserved sectors and FAT count, and "FAT" in the type field
            at 54 (FAT12/16) or 82 (FAT32)
"""

from __future__ import annotations

import struct

from cairn.insights.volume import VolumeReader

EXT, XFS, NTFS, FAT = "ext", "xfs", "ntfs", "fat"

OTHERS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"LUKS\xba\xbe", "a LUKS encrypted volume (unlock it on the protected machine)"),
    (512, b"LABELONE", "an LVM physical volume (not supported yet)"),
    (0x10040, b"_BHRfS_M", "a btrfs file system (not supported yet)"),
    (3, b"EXFAT   ", "an exFAT file system (not supported yet)"),
    (4086, b"SWAPSPACE2", "Linux swap"),
)


def _fat_bpb(boot: bytes) -> bool:
    if len(boot) < 512 or boot[510:512] != b"\x55\xaa" or boot[0] not in (0xEB, 0xE9):
        return False
    bytes_per_sector, sectors_per_cluster, reserved, fats = struct.unpack_from("<HBHB", boot, 11)
    if bytes_per_sector not in (512, 1024, 2048, 4096):
        return False
    if sectors_per_cluster == 0 or sectors_per_cluster & (sectors_per_cluster - 1):
        return False
    if reserved == 0 or fats not in (1, 2):
        return False
    return boot[54:57] == b"FAT" or boot[82:87] == b"FAT32"


def identify(reader: VolumeReader) -> str | None:
    """The supported file system on `reader` (`EXT`, `XFS`, `NTFS`, `FAT`), or None."""
    head = reader.pread(0, 1088)
    if head[1080:1082] == b"\x53\xef":
        return EXT
    if head[:4] == b"XFSB":
        return XFS
    if head[3:11] == b"NTFS    ":
        return NTFS
    if _fat_bpb(head[:512]):
        return FAT
    return None


def describe_unknown(reader: VolumeReader) -> str:
    """A short phrase saying what the start of an unrecognised volume looks like."""
    if reader.size == 0:
        return "it is empty (0 bytes)"
    for offset, magic, name in OTHERS:
        if reader.pread(offset, len(magic)) == magic:
            return f"found {name}"
    head = reader.pread(0, 4096)
    if not head.strip(b"\x00"):
        return "its first 4 KiB are all zeros"
    shown = head[:16].hex(" ")
    return f"found bytes {shown} ..."
