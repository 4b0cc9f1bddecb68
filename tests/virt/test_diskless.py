"""Diskless restore: a machine boots from an NBD export of a clone over TLS, with no disk.

The export is the appliance's (`cairn exports start CLONE --writable`, the REST API), as a
user runs it; QEMU reaches it by its secret name, verifying the appliance's certificate;
what the guest writes lands in the clone and, as the export stops with --keep-as-point,
becomes a point that restores bit for bit.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.appliance.harness import Appliance, cairn
from tests.appliance.test_exports_api import exports, serving
from tests.virt.test_vms import Serial


def qemu_over_nbd_tls(url: str, certs: Path, serial: Path) -> subprocess.Popen[bytes]:
    host_port, name = url.removeprefix("nbds://").split("/", 1)
    host, port = host_port.rsplit(":", 1)
    return subprocess.Popen([
        "qemu-system-x86_64", "-nodefaults", "-machine", "pc", "-accel", "tcg", "-m", "256",
        "-display", "none", "-nic", "none",
        "-object", f"tls-creds-x509,id=tls0,endpoint=client,dir={certs}",
        "-blockdev", f"driver=nbd,node-name=disk,server.type=inet,server.host={host},"
                     f"server.port={port},export={name},tls-creds=tls0",
        "-device", "virtio-blk-pci,drive=disk,bootindex=0",
        "-serial", f"unix:{serial},server=on,wait=off"], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)


def test_a_machine_boots_from_a_tls_export_and_its_writes_become_a_point(
        bootable_image: Path, tmp_path: Path) -> None:
    appliance = Appliance(tmp_path)
    cairn("backup", "--repo", appliance.repo, "--volume", "web01", bootable_image)
    cairn("clone", "--repo", appliance.repo, "web01@latest", "--name", "diskless")
    qemu = None
    offset, written = 48 * 1024 * 1024, b"DISKLESS" * 8192
    with serving(appliance):
        export = exports(appliance, "start", "diskless", "--writable")
        try:
            certs = tmp_path / "certs"
            certs.mkdir()
            (certs / "ca-cert.pem").write_text(appliance.pem)
            qemu = qemu_over_nbd_tls(export["url"], certs, tmp_path / "serial.sock")
            serial = None
            while serial is None:
                assert qemu.poll() is None, qemu.stdout.read() if qemu.stdout else b""
                try:
                    serial = Serial(tmp_path / "serial.sock")
                except OSError:  # QEMU has not made its serial socket yet
                    time.sleep(0.2)
            serial.wait_for("/ #")
            serial.run(f"yes DISKLESS | tr -d '\\n' | head -c {len(written)} | dd of=/dev/vda "
                       f"bs=65536 seek={offset // 65536} conv=fsync 2>&1; echo 'W''ROTE' $?",
                       "WROTE 0")
            serial.close()
        finally:
            if qemu is not None:
                qemu.kill()
                print("qemu said:", qemu.communicate()[0].decode(errors="replace"))  # on failure
        point = exports(appliance, "stop", export["id"], "--keep-as-point")["point"]
    restored = tmp_path / "restored.img"
    cairn("restore", "--repo", appliance.repo, point, restored)
    expected = bytearray(bootable_image.read_bytes())
    expected[offset:offset + len(written)] = written
    assert restored.read_bytes() == bytes(expected)
