"""Real boots under QEMU judged by tesseract: booted, failed, timed out, and nothing leaks."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bootable_image import BANNER

from cairn.errors import VirtualMachineError
from cairn.virt.qemu import VirtualMachine
from cairn.virt.screenshot import judge_screen, verify_boot
from tests.cli.test_cli import ROOT, cairn
from tests.cli.test_export import export_url
from tests.s3server import SeaweedS3

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# A boot to the login prompt takes 10-20 s under TCG on a quiet machine, minutes on a loaded
# one; a verdict comes as soon as the screen decides it, so a long budget costs nothing.
BOOT_BUDGET = 300.0
# mov ax,3; int 10h (text mode 3, which clears the screen); cli; hlt; jmp back to hlt
BLANK_AND_HALT = bytes.fromhex("b80300cd10faf4ebfd")


def qemu_children() -> list[int]:
    """QEMU processes (running or zombie) whose parent is this test process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm = text[text.index("(") + 1 : text.rindex(")")]
        ppid = int(text[text.rindex(")") + 2 :].split()[1])
        if comm.startswith("qemu-system") and ppid == os.getpid():
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(autouse=True)
def no_leaked_qemu() -> Iterator[None]:
    assert qemu_children() == []
    yield
    assert qemu_children() == [], "a QEMU process outlived its test"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_boots_to_login_prompt(bootable_image: Path, tmp_path: Path) -> None:
    before = digest(bootable_image)
    verdict = verify_boot(bootable_image, out=tmp_path / "shot.png", timeout=BOOT_BUDGET)
    assert verdict.status == "booted", verdict
    assert "login:" in verdict.ocr_text
    assert BANNER in verdict.ocr_text
    assert verdict.screenshot == tmp_path / "shot.png"
    assert verdict.screenshot.read_bytes()[:8] == PNG_MAGIC
    assert verdict.seconds < BOOT_BUDGET
    assert digest(bootable_image) == before


def test_zeroed_boot_sector_fails(unbootable_image: Path, tmp_path: Path) -> None:
    verdict = verify_boot(unbootable_image, out=tmp_path / "shot.png", timeout=BOOT_BUDGET)
    assert verdict.status == "failed", verdict
    assert "bootable" in verdict.reason
    assert "bootable" in verdict.ocr_text.lower()
    assert verdict.screenshot is not None
    assert verdict.screenshot.read_bytes()[:8] == PNG_MAGIC


def test_tiny_timeout_times_out(bootable_image: Path, tmp_path: Path) -> None:
    verdict = verify_boot(bootable_image, out=tmp_path / "shot.png", timeout=1.5, accel="tcg")
    assert verdict.status == "timed_out", verdict
    assert verdict.screenshot is not None
    assert verdict.screenshot.read_bytes()[:8] == PNG_MAGIC
    assert verdict.seconds < 10


def test_a_screen_that_stays_blank_fails_early(tmp_path: Path) -> None:
    """A boot sector that clears the screen and halts: nothing to read, ever."""
    disk = tmp_path / "blank.img"
    boot = bytearray(BLANK_AND_HALT.ljust(512, b"\0"))
    boot[510:512] = b"\x55\xaa"
    disk.write_bytes(bytes(boot) + bytes(1024 * 1024 - 512))
    verdict = verify_boot(
        disk, out=tmp_path / "shot.png", timeout=30, blank_after=3, accel="tcg", interval=0.5
    )
    assert verdict.status == "failed", verdict
    assert "blank" in verdict.reason
    assert verdict.seconds < 15


@pytest.mark.parametrize(
    ("text", "status", "reason"),
    [
        ("Debian GNU/Linux 12 host tty1\n\nhost login: _", "booted", "login:"),
        ("Boot failed: not a bootable disk\n\nNo bootable device.", "failed", "no bootable"),
        ("Kernel panic - not syncing: VFS: Unable to mount root fs", "failed", "panicked"),
        (
            "GRUB loading.\nWelcome to GRUB!\nerror: no such partition.\ngrub rescue> ",
            "failed",
            "GRUB",
        ),
        ("Loading /boot/vmlinuz failed: I/O error\nboot: _", "failed", "boot loader"),
        ("You are in emergency mode. After logging in, type", "failed", "emergency"),
        ("SeaBIOS (version 1.16.2)\nBooting from Hard Disk...", None, ""),
        ("Guest has not initialized the display (yet).", None, ""),
    ],
)
def test_judge_screen_reads_common_screens(text: str, status: str | None, reason: str) -> None:
    got_status, got_reason = judge_screen(text, "login:", unchanged_for=0, blank_after=30)
    assert got_status == status
    assert reason in got_reason


def test_judge_screen_calls_blank_only_after_the_grace() -> None:
    placeholder = "Guest has not initialized the display (yet).\n _"
    assert judge_screen(placeholder, "login:", unchanged_for=29, blank_after=30)[0] is None
    assert judge_screen(placeholder, "login:", unchanged_for=30, blank_after=30)[0] == "failed"
    assert judge_screen("Checking disks 12%", "login:", 300, 30)[0] is None


def test_boots_qcow2_overlay_and_leaves_base_untouched(
    bootable_image: Path, tmp_path: Path
) -> None:
    overlay = tmp_path / "clone.qcow2"
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(bootable_image),
            str(overlay),
        ],
        check=True,
    )
    before = digest(bootable_image)
    verdict = verify_boot(overlay, out=tmp_path / "shot.png", timeout=BOOT_BUDGET, snapshot=False)
    assert verdict.status == "booted", verdict
    assert digest(bootable_image) == before


def test_boots_from_nbd_url_of_a_cloud_point(bootable_image: Path, tmp_path: Path,
                                             s3_server: SeaweedS3) -> None:
    """A node that has only the bucket and the key serves a cloud point, read on demand,
    over NBD (`cairn export`), and the machine boots from that URL to its login banner."""
    repo, cloud = tmp_path / "repo", f"s3://{s3_server.bucket}/boot-{os.getpid()}"
    env = {"CAIRN_S3_ENDPOINT": s3_server.endpoint, "CAIRN_S3_ACCESS_KEY": s3_server.access_key,
           "CAIRN_S3_SECRET_KEY": s3_server.secret_key, "CAIRN_KEY_FILE": str(repo / "key"),
           "CAIRN_CACHE": str(tmp_path / "appliance-cache")}
    for args in (("init", "--repo", repo, "--encrypt"), ("init", "--repo", cloud),
                 ("backup", "--repo", repo, "--volume", "boot", bootable_image),
                 ("replicate", "--repo", repo, "--to", cloud)):
        assert cairn(*args, env=env).returncode == 0, args
    other_node = {**env, "CAIRN_CACHE": str(tmp_path / "other-node-cache")}
    server = subprocess.Popen([sys.executable, "-m", "cairn", "export", "--repo", cloud,
                               "boot@latest", "--nbd", "127.0.0.1:0"], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, env={**os.environ, **other_node})
    try:
        assert server.stdout is not None
        url = export_url(server.stdout.readline())
        verdict = verify_boot(url, out=tmp_path / "shot.png", timeout=BOOT_BUDGET)
    finally:
        server.terminate()
        server.wait(10)
    assert verdict.status == "booted", verdict


def test_vnc_and_websocket_listen_on_loopback(unbootable_image: Path) -> None:
    display = next(n for n in range(50, 100) if _port_free(5900 + n))
    websocket = free_port()
    with VirtualMachine(
        str(unbootable_image), accel="tcg", vnc_display=display, vnc_websocket=websocket
    ) as vm:
        workdir = vm.workdir
        with socket.create_connection(("127.0.0.1", 5900 + display), timeout=5) as s:
            assert s.recv(12) == b"RFB 003.008\n"
        with socket.create_connection(("127.0.0.1", websocket), timeout=5) as s:
            s.sendall(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
            )
            assert s.recv(64).startswith(b"HTTP/1.1 101")
    assert not workdir.exists()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_stop_kills_a_qemu_that_ignores_quit(unbootable_image: Path) -> None:
    vm = VirtualMachine(str(unbootable_image), accel="tcg", stop_timeout=0.5)
    with vm:
        pid = vm.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert not Path(f"/proc/{pid}").exists()


def test_missing_disk_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VirtualMachineError, match="cannot read the disk"):
        VirtualMachine(str(tmp_path / "nope.img")).start()


def test_unreachable_nbd_export_is_a_clear_error(tmp_path: Path) -> None:
    vm = VirtualMachine(f"nbd://127.0.0.1:{free_port()}", accel="tcg")
    with pytest.raises(VirtualMachineError, match="QEMU exited at start"):
        vm.start()
    assert vm.pid is None
