"""A tiny Linux guest with the real QEMU guest agent, booted straight from kernel + initramfs.

The guest loads the virtio modules, mounts its first virtio disk (ext4, made on the host) at
``/data`` and runs Debian's ``qemu-ga`` on the guest agent's virtio-serial port. Tests then
freeze and thaw real file systems and write files in the guest with ``guest-exec``.

Nothing is installed on the host: the cloud kernel and ``qemu-guest-agent`` packages are
fetched with ``apt-get download`` and unpacked; the agent's shared libraries are the host's
own (the same Debian release), found with ``ldd``. The initramfs is written by hand as in
`tests.virt.bootable_image`.
"""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

from tests.virt.bootable_image import BUSYBOX, KERNEL_META_PACKAGE, _cpio_entry

MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "virtio_console", "virtio_blk")
READY = "cairn-guest-ready"

INIT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {' '.join(MODULES)}; do insmod /lib/modules/$m.ko; done
sleep 1
mkdir -p /data /var/run /tmp
mount -t ext4 /dev/vda /data
for p in /sys/class/virtio-ports/*; do
  [ "$(cat $p/name)" = org.qemu.guest_agent.0 ] && port=/dev/$(basename $p)
done
/usr/sbin/qemu-ga -m virtio-serial -p $port -f /var/run/qga.pid -t /tmp &
echo {READY} > /dev/ttyS0
while true; do sleep 3600; done
"""


def _download(work: Path, package: str) -> Path:
    subprocess.run(["apt-get", "download", "-q", package], cwd=work, check=True,
                   capture_output=True)
    return next(work.glob(f"{package}_*.deb"))


def _kernel_package() -> str:
    depends = subprocess.run(["apt-cache", "depends", KERNEL_META_PACKAGE], check=True,
                             capture_output=True, text=True).stdout
    return next(line.split(":", 1)[1].strip() for line in depends.splitlines()
                if line.strip().startswith("Depends: linux-image-"))


def _unpack(deb: Path, dest: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)


def _libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True,
                         text=True).stdout
    return [Path(m) for m in re.findall(r"(/\S+\.so[.\d]*)", out)]


def build_guest(work: Path) -> tuple[Path, Path]:
    """``(kernel, initramfs)`` of the guest, built in ``work``."""
    root = work / "unpacked"
    for package in (_kernel_package(), "qemu-guest-agent"):
        _unpack(_download(work, package), root)
    kernel = next((root / "boot").glob("vmlinuz-*"))
    agent = root / "usr" / "sbin" / "qemu-ga"
    files: dict[str, bytes] = {"bin/busybox": BUSYBOX.read_bytes(),
                               "usr/sbin/qemu-ga": agent.read_bytes(),
                               "init": INIT.encode()}
    for lib in _libraries(agent):
        files[str(lib).lstrip("/")] = lib.resolve().read_bytes()
    for module in MODULES:
        found = next(root.glob(f"lib/modules/*/kernel/drivers/**/{module}.ko"))
        files[f"lib/modules/{module}.ko"] = found.read_bytes()
    initramfs = work / "initrd.img"
    initramfs.write_bytes(_cpio(files))
    return kernel, initramfs


def _cpio(files: dict[str, bytes]) -> bytes:
    dirs = sorted({str(Path(name).parents[i]) for name in files
                   for i in range(len(Path(name).parents) - 1)} | {"dev", "proc", "sys"})
    entries = [(d, stat.S_IFDIR | 0o755, b"", (0, 0)) for d in dirs]
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    entries += [(name, stat.S_IFREG | 0o755, data, (0, 0)) for name, data in files.items()]
    out = bytearray()
    for ino, (name, mode, data, (major, minor)) in enumerate(entries, start=1):
        out += _cpio_entry(ino, name, mode, data, major, minor)
    out += _cpio_entry(0, "TRAILER!!!", 0, b"", 0, 0)
    return bytes(out)
