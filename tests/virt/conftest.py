"""Session-wide test machines (a bootable image and a copy that cannot boot), and NBD servers
that are always closed, even when a test fails."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bootable_image import build_bootable_image
from uefi_image import build_uefi_image

from cairn.virt.device import BlockDevice
from cairn.virt.nbd import NbdServer

NEEDED = {
    "qemu-system-x86_64": "qemu-system-x86",
    "tesseract": "tesseract-ocr",
    "extlinux": "extlinux",
    "mkfs.ext4": "e2fsprogs",
    "busybox": "busybox-static",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "sfdisk": "fdisk",
}


@pytest.fixture(scope="session")
def bootable_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A raw disk that boots (MBR, extlinux, cloud kernel) to a ``cairn-test login:`` prompt.

    Tests must not write to it: boot it with ``snapshot=True`` or through an overlay.
    """
    missing = [f"{tool} ({pkg})" for tool, pkg in NEEDED.items() if shutil.which(tool) is None]
    if missing:
        pytest.skip("missing: " + ", ".join(missing))
    folder = tmp_path_factory.mktemp("bootable")
    try:
        yield build_bootable_image(folder / "machine.img")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def uefi_image(bootable_image: Path) -> Iterator[Path]:
    """A GPT disk with an EFI system partition and systemd-boot: boots only with OVMF."""
    path = bootable_image.with_name("uefi.img")
    try:
        yield build_uefi_image(path)
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def unbootable_image(bootable_image: Path) -> Iterator[Path]:
    """The same disk with its first MiB (MBR boot code and partition table) zeroed."""
    path = bootable_image.with_name("no-boot-sector.img")
    shutil.copyfile(bootable_image, path)
    with path.open("r+b") as f:
        f.write(bytes(1024 * 1024))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@pytest.fixture
def serve() -> Iterator[Callable[..., NbdServer]]:
    """Start an `NbdServer` on a free loopback port; every one started is closed at teardown."""
    servers: list[NbdServer] = []

    def start(device: BlockDevice, **kwargs: Any) -> NbdServer:
        server = NbdServer(device, "127.0.0.1", 0, **kwargs)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.close()
