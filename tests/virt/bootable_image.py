"""Build a small machine that really boots, so screenshot tests judge a real screen.

The image is what a protected Linux server looks like to the firmware: an MBR with the
syslinux boot code, one active ext4 partition, extlinux on it, a Debian cloud kernel and an
initramfs. The initramfs is busybox, a few kernel modules and an ``/init`` that clears the
screen, prints `BANNER` and a ``login:`` prompt, then sleeps: no disk driver, no root
mount, so it boots to that prompt under TCG in seconds.

Behind the banner the machine is a small server, so network tests have something to talk
to: with a virtio NIC it takes an address by DHCP (QEMU's user networking) or else
``10.0.0.N`` with N from its MAC address (isolated LANs), serves `WEB_PAGE` on port 80,
and reports ``NET UP <address>`` on its first serial port, where a root shell runs (the
serial port is a unix socket only the VM's owner can open). The ACPI power button powers it
off, as a real server's would.

Nothing is installed on the host: the kernel ``.deb`` is fetched with ``apt-get download``
and only its ``vmlinuz`` and `MODULES` are unpacked. The ext4 file system is made in its own
file and filled through a loop mount of that file (no partition offsets), where
``extlinux --install`` can write its boot sector; the mount is always undone, then the file
is copied into the partition.
"""

from __future__ import annotations

import shutil
import stat
import struct
import subprocess
from pathlib import Path

from cairn import scratch

BANNER = "CAIRN TEST MACHINE"
HOSTNAME = "cairn-test"
SECTOR = 512
PARTITION_START = 2048 * SECTOR
MBR_BOOT_CODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
BUSYBOX = Path("/bin/busybox")
KERNEL_META_PACKAGE = "linux-image-cloud-amd64"

WEB_PAGE = "cairn test machine web page"
# Load order matters: each module after the ones it needs.
MODULES = (
    "drivers/virtio/virtio_ring", "drivers/virtio/virtio", "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev", "drivers/virtio/virtio_pci", "net/core/failover",
    "drivers/net/net_failover", "drivers/net/virtio_net", "drivers/block/virtio_blk",
    "drivers/acpi/button", "drivers/input/evdev",
)

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {" ".join(m.rsplit("/", 1)[1] for m in MODULES)}; do insmod /lib/modules/$m.ko; done
clear
echo
echo "    {BANNER}"
echo
echo "Debian GNU/Linux 12 {HOSTNAME} tty1"
echo
printf "{HOSTNAME} login: "
for e in /dev/input/event*; do (head -c 1 $e >/dev/null && poweroff -f) & done
setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1' &
if [ -e /sys/class/net/eth0 ]; then
  ip link set lo up
  ip link set eth0 up
  if ! udhcpc -i eth0 -s /bin/dhcp-up -q -n -T 1 -t 3 >/dev/null 2>&1; then
    mac=$(cat /sys/class/net/eth0/address)
    ip addr add 10.0.0.$(( 0x${{mac##*:}} % 200 + 10 ))/24 dev eth0
  fi
  mkdir -p /www
  echo "{WEB_PAGE}" > /www/index.html
  httpd -p 80 -h /www
  echo "NET UP $(ip -4 -o addr show eth0 | awk '{{print $4}}')" > /dev/ttyS0
fi
while true; do sleep 3600; done
"""

DHCP_SCRIPT = """#!/bin/sh
[ "$1" = bound ] || exit 0
ifconfig "$interface" "$ip" netmask "$subnet"
[ -n "$router" ] && route add default gw "$router"
exit 0
"""

EXTLINUX_CONF = """DEFAULT cairn
PROMPT 0
TIMEOUT 0
LABEL cairn
  LINUX /boot/vmlinuz
  INITRD /boot/initrd.img
  APPEND console=tty0 quiet loglevel=0
"""


def build_bootable_image(path: Path, size_mib: int = 64) -> Path:
    """Write a bootable raw disk image to `path` and return it."""
    with scratch.folder("cairn-bootable-") as work:
        boot = work / "boot"
        boot.mkdir()
        fetch_kernel(work, boot / "vmlinuz")
        write_initramfs(boot / "initrd.img", work / "modules")
        partition = work / "part.ext4"
        part_bytes = size_mib * 1024 * 1024 - PARTITION_START
        make_ext4(partition, part_bytes)
        install_boot_files(partition, work / "mnt", boot)
        write_disk(path, partition, part_bytes)
    return path


def fetch_kernel(work: Path, dest: Path) -> None:
    """Download the newest cloud kernel package and unpack only its vmlinuz."""
    depends = subprocess.run(
        ["apt-cache", "depends", KERNEL_META_PACKAGE],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    package = next(
        line.split(":", 1)[1].strip()
        for line in depends.splitlines()
        if line.strip().startswith("Depends: linux-image-")
    )
    subprocess.run(
        ["apt-get", "download", "-q", package], cwd=work, check=True, capture_output=True
    )
    deb = next(work.glob(f"{package}_*.deb"))
    version = package.removeprefix("linux-image-")
    modules = [f"./lib/modules/{version}/kernel/{m}.ko" for m in MODULES]
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
        subprocess.run(
            ["tar", "-x", "-C", str(work), "--wildcards", "./boot/vmlinuz-*", *modules],
            stdin=p.stdout,
            check=True,
        )
    if p.returncode:
        raise RuntimeError(f"dpkg-deb could not read {deb}")
    shutil.move(next((work / "boot").glob("vmlinuz-*")), dest)
    (work / "modules").mkdir()
    for module in modules:
        shutil.move(work / module, work / "modules" / Path(module).name)
    deb.unlink()


def write_initramfs(dest: Path, modules: Path) -> None:
    """Write a newc cpio archive by hand: no cpio tool needed, no mknod privilege needed."""
    folder = stat.S_IFDIR | 0o755
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = [
        ("bin", folder, b"", (0, 0)),
        ("dev", folder, b"", (0, 0)),
        ("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)),
        ("proc", folder, b"", (0, 0)),
        ("sys", folder, b"", (0, 0)),
        ("lib", folder, b"", (0, 0)),
        ("lib/modules", folder, b"", (0, 0)),
        ("bin/busybox", stat.S_IFREG | 0o755, BUSYBOX.read_bytes(), (0, 0)),
        ("bin/sh", stat.S_IFLNK | 0o777, b"busybox", (0, 0)),
        ("bin/dhcp-up", stat.S_IFREG | 0o755, DHCP_SCRIPT.encode(), (0, 0)),
        ("init", stat.S_IFREG | 0o755, INIT_SCRIPT.encode(), (0, 0)),
    ]
    entries += [(f"lib/modules/{m.name}", stat.S_IFREG | 0o644, m.read_bytes(), (0, 0))
                for m in sorted(modules.iterdir())]
    out = bytearray()
    for ino, (name, mode, data, (major, minor)) in enumerate(entries, start=1):
        out += _cpio_entry(ino, name, mode, data, major, minor)
    out += _cpio_entry(0, "TRAILER!!!", 0, b"", 0, 0)
    dest.write_bytes(bytes(out))


def _cpio_entry(ino: int, name: str, mode: int, data: bytes, major: int, minor: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(encoded), 0)
    header = b"070701" + b"".join(b"%08X" % value for value in fields)
    head = header + encoded
    return head + _pad4(len(head)) + data + _pad4(len(data))


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def make_ext4(dest: Path, size: int) -> None:
    """Make an empty file system in its own file, so no partition offsets are ever needed."""
    with dest.open("wb") as f:
        f.truncate(size)
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-L", "cairn-root", str(dest)], check=True, capture_output=True
    )


def install_boot_files(partition: Path, mountpoint: Path, boot: Path) -> None:
    """Copy kernel and initramfs in through a loop mount, then let extlinux write its loader.

    The files are written through the kernel rather than with ``mkfs.ext4 -d`` because that
    punches holes for zero blocks, and syslinux cannot load a file with holes ("I/O error").
    """
    mountpoint.mkdir()
    subprocess.run(
        ["mount", "-o", "loop", str(partition), str(mountpoint)], check=True, capture_output=True
    )
    try:
        target = mountpoint / "boot"
        (target / "extlinux").mkdir(parents=True)
        for name in ("vmlinuz", "initrd.img"):
            shutil.copyfile(boot / name, target / name)
        (target / "extlinux" / "extlinux.conf").write_text(EXTLINUX_CONF)
        subprocess.run(
            ["extlinux", "--install", str(target / "extlinux")], check=True, capture_output=True
        )
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)


def write_disk(path: Path, partition: Path, part_bytes: int) -> None:
    """Lay out MBR boot code, one active Linux partition entry, then the file system."""
    mbr = bytearray(SECTOR)
    code = MBR_BOOT_CODE.read_bytes()
    mbr[: len(code)] = code
    start_lba = PARTITION_START // SECTOR
    # LBA-only entry: CHS fields at their "beyond 8 GiB" maximum, as fdisk writes them.
    mbr[446:462] = struct.pack(
        "<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", start_lba, part_bytes // SECTOR
    )
    mbr[510:512] = b"\x55\xaa"
    with path.open("wb") as disk, partition.open("rb") as src:
        disk.write(mbr)
        disk.seek(PARTITION_START)
        shutil.copyfileobj(src, disk, 1024 * 1024)
        disk.truncate(PARTITION_START + part_bytes)
