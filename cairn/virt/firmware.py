"""How to boot a disk: which firmware it needs and which disk bus its guest can drive.

Read from the point itself before QEMU starts, so a disk that cannot boot gets a clear
message instead of a firmware screen: an EFI system partition (GPT or MBR type 0xEF) means
UEFI (OVMF); boot code in the MBR means BIOS (SeaBIOS); neither means no known boot loader.
A disk with Linux partitions gets virtio (every Linux kernel since 2.6.25 has the driver);
anything else gets SATA, which every modern guest drives without extra drivers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cairn.errors import PartitionTableError, UsageError
from cairn.insights.partitions import read_partitions
from cairn.insights.volume import VolumeReader
from cairn.virt.qemu import DiskBus, Firmware

FirmwareChoice = Literal["auto", "bios", "uefi"]
BusChoice = Literal["auto", "ide", "sata", "virtio"]
MBR_CODE = 440


@dataclass(frozen=True)
class BootPlan:
    firmware: Firmware
    disk_bus: DiskBus
    linux: bool


class NoBootLoader(UsageError):
    def __init__(self, what: str) -> None:
        super().__init__(f"{what} has no known boot loader (no EFI system partition and no "
                         "boot code in its MBR): restore files from it with `cairn "
                         "restore-files`, or force one with --firmware bios|uefi")


def plan_boot(disk: VolumeReader, what: str, firmware: FirmwareChoice = "auto",
              disk_bus: BusChoice = "auto") -> BootPlan:
    """Decide firmware and bus for ``disk`` (``what`` names it in messages)."""
    try:
        partitions = read_partitions(disk)
    except PartitionTableError as exc:
        raise UsageError(f"{what}: {exc}") from None
    types = {p.type_name for p in partitions}
    linux = any(name.startswith("Linux") for name in types)
    if firmware == "auto":
        firmware = _detect_firmware(disk, types, what)
    bus: DiskBus = ("virtio" if linux else "sata") if disk_bus == "auto" else disk_bus
    return BootPlan(firmware, bus, linux)


def _detect_firmware(disk: VolumeReader, types: set[str], what: str) -> Firmware:
    if "EFI System" in types:
        return "uefi"
    sector0 = disk.pread(0, 512)
    if sector0[510:512] == b"\x55\xaa" and any(sector0[:MBR_CODE]):
        return "bios"
    raise NoBootLoader(what)
