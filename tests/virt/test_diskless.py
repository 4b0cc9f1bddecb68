"""Diskless restore: a machine boots from an NBD export of a clone over TLS, with no disk.

The export is `cairn export CLONE --tls` as a user runs it; QEMU reaches it by its secret
name, verifying the repository's certificate; what the guest writes lands in the clone and
becomes a point that restores bit for bit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cairn.store.clones import get_clone
from cairn.store.repository import Repository
from cairn.virt.failback import keep_as_point
from tests.cli.test_cli import ROOT, ok
from tests.cli.test_export import export_url, free_port
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
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    ok("backup", "--repo", repo, "--volume", "web01", bootable_image)
    ok("clone", "--repo", repo, "web01@latest", "--name", "diskless")
    export = subprocess.Popen([sys.executable, "-m", "cairn", "export", "--repo", str(repo),
                               "diskless", "--nbd", f"127.0.0.1:{free_port()}", "--tls"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    qemu = None
    offset, written = 48 * 1024 * 1024, b"DISKLESS" * 8192
    try:
        assert export.stdout is not None
        url = export_url(export.stdout.readline())
        certs = tmp_path / "certs"
        certs.mkdir()
        (certs / "ca-cert.pem").write_bytes((repo / "tls" / "cert.pem").read_bytes())
        qemu = qemu_over_nbd_tls(url, certs, tmp_path / "serial.sock")
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
            print("qemu said:", qemu.communicate()[0].decode(errors="replace"))  # shown on failure
        export.send_signal(signal.SIGINT)
        print("export said:", export.communicate(timeout=30)[1])
    with_repo = Repository.open(repo)
    try:
        point = keep_as_point(with_repo, get_clone(with_repo, "diskless"))
    finally:
        with_repo.close()
    restored = tmp_path / "restored.img"
    ok("restore", "--repo", repo, point.id, restored)
    expected = bytearray(bootable_image.read_bytes())
    expected[offset:offset + len(written)] = written
    assert restored.read_bytes() == bytes(expected)
