"""Run one disk (a point over NBD, a clone's overlay, an image file) as a headless QEMU VM.

`VirtualMachine` is a context manager: the QEMU process it starts is gone when the block ends,
whatever happened inside, and it is killed if this Python process dies first. The VM has no
network (``-nic none``) and no default devices (``-nodefaults``: no floppy or CD-ROM for the
firmware to fall back to), so what the screen shows comes from that one disk. Its console is
reachable through QMP (``screendump``, ``query-status``) and optionally VNC on loopback.

QMP is spoken by the small synchronous client below rather than the asyncio ``qemu.qmp``
package: callers are plain threads (CLI, job runner), and a QMP session bound to one event
loop cannot be driven from them. The wire format is one JSON object per line: QEMU greets
with ``{"QMP": ...}``, the client sends ``{"execute": "qmp_capabilities"}``, then each
``{"execute": cmd, "arguments": {...}, "id": n}`` gets ``{"return": ...}`` or
``{"error": {"class", "desc"}}`` with the same ``id``; ``{"event": ...}`` lines may arrive in
between at any time and are skipped.

Acceleration: KVM when ``/dev/kvm`` answers ``KVM_GET_API_VERSION``, else TCG. KVM that opens
can still fail to run a guest (nested KVM without real-mode emulation stops SYSLINUX with
"KVM internal error"); callers that see status ``internal-error`` call `mark_kvm_broken` and
start again, and every later VM in this process then uses TCG.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from cairn.errors import ToolMissing, VirtualMachineError

QEMU = "qemu-system-x86_64"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
PR_SET_PDEATHSIG = 1
QCOW2_MAGIC = b"QFI\xfb"

Accel = Literal["auto", "kvm", "tcg"]

_kvm_broken = False
_LIBC = ctypes.CDLL(None, use_errno=True)


def kvm_usable() -> bool:
    """Whether /dev/kvm opens and speaks the stable API, and no guest has shown it broken."""
    if _kvm_broken:
        return False
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION) == KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def mark_kvm_broken() -> None:
    """Remember for this process that KVM opens but cannot run guests; use TCG from now on."""
    global _kvm_broken
    _kvm_broken = True


def detect_format(drive: str) -> str:
    """``qcow2`` for a file with the qcow2 magic, else ``raw`` (NBD exports are raw)."""
    if "://" in drive:
        return "raw"
    try:
        with open(drive, "rb") as f:
            return "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"
    except OSError as e:
        raise VirtualMachineError(
            f"cannot read the disk {drive}: {e.strerror}; check the path"
        ) from None


@dataclass
class VirtualMachine:
    """How to boot one disk, and, once entered as a context manager, the running VM.

    `snapshot` sends the guest's writes to a throwaway overlay so the disk is never changed
    (what a verification wants); turn it off to boot a writable clone for real. `vnc_display`
    N listens on 127.0.0.1:5900+N, `vnc_websocket` on that loopback port for noVNC.
    `die_with_parent` kills QEMU when the thread that started it exits: right for a
    verification, wrong for a long-lived VM started from a short-lived worker thread.
    """

    drive: str
    format: str | None = None
    interface: Literal["ide", "virtio"] = "ide"
    snapshot: bool = True
    memory_mib: int = 512
    accel: Accel = "auto"
    vnc_display: int | None = None
    vnc_websocket: int | None = None
    die_with_parent: bool = True
    start_timeout: float = 10.0
    stop_timeout: float = 5.0

    def __post_init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._qmp: QmpClient | None = None
        self._workdir: Path | None = None
        self.used_accel: str | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise VirtualMachineError("the virtual machine is not running: start it first")
        return self._workdir

    def command(self, qmp_socket: Path) -> list[str]:
        """The QEMU command line, resolved once the accelerator is chosen."""
        accel = self.accel if self.accel != "auto" else ("kvm" if kvm_usable() else "tcg")
        self.used_accel = accel
        fmt = self.format or detect_format(self.drive)
        drive = f"file={self.drive},format={fmt},if={self.interface}"
        if self.snapshot:
            drive += ",snapshot=on"
        cmd = [
            QEMU,
            "-nodefaults",
            "-machine",
            "pc",
            "-accel",
            accel,
            "-m",
            str(self.memory_mib),
            "-vga",
            "std",
            "-nic",
            "none",
            "-boot",
            "strict=on",
            "-display",
            "none",
            "-drive",
            drive,
            "-qmp",
            f"unix:{qmp_socket},server=on,wait=off",
        ]
        if accel == "kvm":
            cmd += ["-cpu", "host"]
        if self.vnc_display is not None:
            vnc = f"127.0.0.1:{self.vnc_display}"
            if self.vnc_websocket is not None:
                vnc += f",websocket=127.0.0.1:{self.vnc_websocket}"
            cmd += ["-vnc", vnc]
        return cmd

    def start(self) -> None:
        """Start QEMU and connect to its QMP socket; on any failure nothing is left running."""
        if shutil.which(QEMU) is None:
            raise ToolMissing(QEMU, "qemu-system-x86")
        self._workdir = Path(tempfile.mkdtemp(prefix="cairn-vm-"))
        qmp_socket = self._workdir / "qmp.sock"
        log = (self._workdir / "qemu.log").open("wb")
        try:
            self._process = subprocess.Popen(
                self.command(qmp_socket),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if self.die_with_parent else None,
            )
            self._qmp = self._connect(qmp_socket)
        except BaseException:
            self.stop()
            raise
        finally:
            log.close()

    def _connect(self, qmp_socket: Path) -> QmpClient:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                raise VirtualMachineError(f"QEMU exited at start: {self.log_tail()}")
            with contextlib.suppress(FileNotFoundError, ConnectionRefusedError,
                                     ConnectionResetError, BrokenPipeError):
                return QmpClient(qmp_socket)
            if time.monotonic() > deadline:
                raise VirtualMachineError(
                    f"QEMU did not open its QMP socket within {self.start_timeout:.0f} s"
                )
            time.sleep(0.05)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def status(self) -> str:
        """QEMU's run state: ``running``, ``internal-error``, ``guest-panicked``, ``shutdown``..."""
        return str(self._client().execute("query-status")["status"])

    def screendump(self, path: Path) -> Path:
        """Write the current screen as PNG (QEMU >= 7.1 encodes it itself)."""
        path = Path(path).absolute()
        self._client().execute("screendump", {"filename": str(path), "format": "png"})
        return path

    def log_tail(self, lines: int = 5) -> str:
        """QEMU's last words, for error messages."""
        if self._workdir is None:
            return ""
        log = self._workdir / "qemu.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "no output"

    def _client(self) -> QmpClient:
        if self._qmp is None or not self.running():
            raise VirtualMachineError(f"QEMU is not running: {self.log_tail()}")
        return self._qmp

    def stop(self) -> None:
        """Ask QEMU to quit, kill it if it does not, and remove the working folder."""
        process, self._process = self._process, None
        qmp, self._qmp = self._qmp, None
        if qmp is not None:
            with contextlib.suppress(OSError, VirtualMachineError):
                qmp.set_timeout(self.stop_timeout)
                qmp.execute("quit")
            qmp.close()
        if process is not None:
            _reap(process, self.stop_timeout)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> VirtualMachine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _reap(process: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGKILL when our thread dies."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class QmpClient:
    """A blocking QMP session over a unix socket; see the module docstring for the format."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(str(path))
            self._file = self._sock.makefile("rwb")
            greeting = self._read()
            if "QMP" not in greeting:
                raise VirtualMachineError(f"not a QMP greeting: {greeting}")
            self._next_id = 0
            self.execute("qmp_capabilities")
        except BaseException:
            self._sock.close()
            raise

    def set_timeout(self, seconds: float) -> None:
        self._sock.settimeout(seconds)

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command and return its ``return`` value; a QMP error becomes ours."""
        self._next_id += 1
        request: dict[str, Any] = {"execute": command, "id": self._next_id}
        if arguments:
            request["arguments"] = arguments
        self._file.write(json.dumps(request).encode() + b"\n")
        self._file.flush()
        while True:
            reply = self._read()
            if reply.get("id") != self._next_id:
                continue
            if "error" in reply:
                raise VirtualMachineError(f"QEMU refused {command}: {reply['error']['desc']}")
            return reply.get("return")

    def _read(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise VirtualMachineError("QEMU closed its QMP connection")
        message: dict[str, Any] = json.loads(line)
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self._sock.close()
