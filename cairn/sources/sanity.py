"""Is this the disk the user meant? Checked before a backup reads anything else.

A typo in a cron job must not give "successful" backups of the wrong thing, exit 0. So
`check_source` refuses, naming which test failed and why (``--force`` backs it up anyway):

- an empty source (0 bytes): a path that names nothing useful;
- a source whose size differs from the volume's latest point: another disk, or one that
  was resized (then ``--force``, or a new volume name);
- a source that looks like no disk: no partition table (MBR, GPT) and no file system or
  volume signature known to `cairn.insights.signature`, and either a disk image container
  given as raw (qcow2, VMDK, VHDX, VDI: convert it first) or a first 64 KiB that is mostly
  text (a log, a config file).

Random or encrypted bytes with no signature pass: a dm-crypt or raw database volume is a
real disk. Cost: at most two reads of 64 KiB.
"""

from __future__ import annotations

from cairn.errors import SourceError
from cairn.insights import signature
from cairn.insights.volume import VolumeReader
from cairn.units import human_bytes

SAMPLE = 64 * 1024
_TEXT = bytes(range(0x20, 0x7F)) + b"\t\n\r\f"
_CONTAINERS = ((b"QFI\xfb", "a qcow2 image"), (b"KDMV", "a VMDK image"),
               (b"vhdxfile", "a VHDX image"), (b"conectix", "a VHD image"),
               (b"<<< Oracle VM VirtualBox Disk Image", "a VDI image"))


def check_source(reader: VolumeReader, name: str, previous_size: int | None) -> None:
    """Raise `SourceError` when ``reader`` (the source ``name``) looks wrong; see module."""
    force = "pass --force to back it up anyway"
    if reader.size == 0:
        raise SourceError(f"{name} is empty (0 bytes): nothing to back up; check the path "
                          f"(a typo?), or {force}")
    if previous_size is not None and reader.size != previous_size:
        raise SourceError(f"{name} is {human_bytes(reader.size)} ({reader.size} bytes) but "
                          f"this volume's points are {human_bytes(previous_size)} "
                          f"({previous_size} bytes): is it the right disk? If it was resized, "
                          f"{force} (or give it a new --volume name)")
    why = not_a_disk(reader)
    if why:
        raise SourceError(f"{name} does not look like a disk: {why}; check the path, or "
                          f"{force}")


def not_a_disk(reader: VolumeReader) -> str:
    """Why ``reader`` looks like no disk at all, or "" when it may well be one."""
    head = _at(reader, 0, min(SAMPLE, reader.size))
    if _partition_table(reader, head) or (reader.size >= 1088
                                          and signature.identify(reader) is not None):
        return ""
    if any(_at(reader, off, len(magic)) == magic for off, magic, _ in signature.OTHERS):
        return ""
    for magic, kind in _CONTAINERS:
        if head.startswith(magic):
            return (f"it is {kind} file, not a raw disk (convert it with `qemu-img convert "
                    "-O raw` and back up the result)")
    data = head.replace(b"\x00", b"")
    if len(data) >= 64 and len(data.translate(None, _TEXT)) < len(data) // 20:
        return ("no partition table, no known file system, and its first "
                f"{human_bytes(len(head))} are mostly text")
    return ""


def _partition_table(reader: VolumeReader, head: bytes) -> bool:
    """An MBR (boot signature and a non-empty entry) or a GPT header (sector size 512 or
    4096)."""
    if b"EFI PART" in (_at(reader, 512, 8), _at(reader, 4096, 8)):
        return True
    if head[510:512] != b"\x55\xaa":
        return False
    entries = head[446:510]
    return any(entries[i + 4] != 0 for i in range(0, 64, 16))


def _at(reader: VolumeReader, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset``, or none when the source ends before."""
    return reader.pread(offset, length) if offset + length <= reader.size else b""
