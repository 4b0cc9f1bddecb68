"""A small machine that boots only with UEFI: GPT, an EFI system partition, systemd-boot.

The same kernel and initramfs as `bootable_image` (so the same banner, serial shell and
network), but found the UEFI way: the firmware starts ``EFI/BOOT/BOOTX64.EFI`` from the EFI
system partition, which is Debian's ``systemd-bootx64.efi``, and systemd-boot reads its one
loader entry. The FAT file system is made in its own file and filled with mtools (the kernel
here has no vfat driver), then laid into the partition sfdisk made. There is no MBR boot
code, so SeaBIOS cannot boot it: only OVMF can.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from bootable_image import fetch_kernel, write_initramfs

from cairn import scratch

SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MiB = 1024 * 1024
ESP_START = MiB

LOADER_CONF = "default cairn.conf\ntimeout 0\n"
ENTRY = ("title cairn test machine\nlinux /vmlinuz\ninitrd /initrd.img\n"
         "options console=tty0 quiet loglevel=0\n")


def build_uefi_image(path: Path, size_mib: int = 64) -> Path:
    """Write a raw GPT disk that boots with OVMF to `path` and return it."""
    esp_bytes = (size_mib - 2) * MiB
    with scratch.folder("cairn-uefi-") as work:
        fetch_kernel(work, work / "vmlinuz")
        write_initramfs(work / "initrd.img", work / "modules")
        (work / "loader.conf").write_text(LOADER_CONF)
        (work / "cairn.conf").write_text(ENTRY)
        esp = work / "esp.fat"
        with esp.open("wb") as f:
            f.truncate(esp_bytes)
        subprocess.run(["mkfs.vfat", "-F", "32", "-n", "ESP", str(esp)], check=True,
                       capture_output=True)
        image = f"-i{esp}"
        for folder in ("::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"):
            subprocess.run(["mmd", image, folder], check=True, capture_output=True)
        copies = [(SYSTEMD_BOOT, "::/EFI/BOOT/BOOTX64.EFI"), (work / "vmlinuz", "::/vmlinuz"),
                  (work / "initrd.img", "::/initrd.img"), (work / "loader.conf",
                  "::/loader/loader.conf"), (work / "cairn.conf", "::/loader/entries/cairn.conf")]
        for source, target in copies:
            subprocess.run(["mcopy", image, str(source), target], check=True, capture_output=True)
        with path.open("wb") as disk:
            disk.truncate(size_mib * MiB)
        table = f"label: gpt\nstart={ESP_START // 512}, size={esp_bytes // 512}, type={ESP_TYPE}\n"
        subprocess.run(["sfdisk", "-q", str(path)], input=table.encode(), check=True,
                       capture_output=True)
        with path.open("r+b") as disk, esp.open("rb") as src:
            disk.seek(ESP_START)
            while chunk := src.read(MiB):
                disk.write(chunk)
    return path
