"""Run disks (points over NBD, a clone's overlay, image files) as a headless QEMU VM.

`VirtualMachine` is a context manager: the QEMU process it starts is gone when the block ends,
whatever happened inside, and it is killed if this Python process dies first. By default the
VM has no network (``-nic none``), and never default devices (``-nodefaults``: no floppy or
CD-ROM for the firmware to fall back to), so what the screen shows comes from its disks.
BIOS guests run on the ``pc`` machine with SeaBIOS, UEFI guests on ``q35`` with OVMF. Its console is
reachable through QMP (``screendump``, ``query-status``) and optionally VNC on loopback,
with a password when one is given.

QMP is spoken by the small synchronous client below rather than the asyncio ``qemu.qmp``
package: callers are plain threads (CLI, job runner), and a QMP session bound to one event
loop cannot be driven from them. The wire format is one JSON object per line: QEMU greets
with ``{"QMP": ...}``, the client sends ``{"execute": "qmp_capabilities"}``, then each
``{"execute": cmd, "arguments": {...}, "id": n}`` gets ``{"return": ...}`` or
``{"error": {"class", "desc"}}`` with the same ``id``; ``{"event": ...}`` lines may arrive in
between at any time and are skipped.

Acceleration: KVM when ``/dev/kvm`` answers ``KVM_GET_API_VERSION``, else TCG. KVM that opens
can still fail to run a guest (nested KVM without real-mode emulation stops SYSLINUX with
"KVM internal error"); code watching a VM raises `KvmCannotRun` when `kvm_failed`, and
`with_tcg_fallback` starts it again under TCG; every later VM in this process uses TCG.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from cairn import scratch
from cairn.errors import ToolMissing, VirtualMachineError

QEMU = "qemu-system-x86_64"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
PR_SET_PDEATHSIG = 1
SCRATCH_PREFIX = "cairn-vm-"
"""the temporary folders of a VM (QEMU's sockets and log; a runner's disk sockets)"""
QCOW2_MAGIC = b"QFI\xfb"

Accel = Literal["auto", "kvm", "tcg"]
T = TypeVar("T")

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


class KvmCannotRun(VirtualMachineError):
    """KVM opens but cannot run this guest: QEMU aborted at start naming KVM, or code watching
    the VM saw `VirtualMachine.kvm_failed`. `with_tcg_fallback` runs it again on TCG."""


def vnc_secret() -> str:
    """A VNC password: the RFB protocol uses at most 8 characters, so make all 8 count."""
    return secrets.token_urlsafe(6)


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


OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

Firmware = Literal["bios", "uefi"]
DiskBus = Literal["ide", "sata", "virtio"]


@dataclass
class VirtualMachine:
    """How to boot one or more disks, and, once entered as a context manager, the running VM.

    `snapshot` sends the guest's writes to a throwaway overlay so the disk is never changed
    (what a verification wants); turn it off to boot a writable clone for real. `vnc_display`
    N listens on 127.0.0.1:5900+N (``"auto"``: the first free one, see `vnc_port`),
    `vnc_websocket` on that loopback port for noVNC; with `vnc_password` a client must give
    it (VNC passwords are 8 characters at most). `die_with_parent` kills QEMU when the
    thread that started it exits: right for a verification and for a VM runner, wrong for a
    long-lived VM started from a short-lived worker thread.

    `drive` boots; `more_drives` are attached after it in order. `nics` are QEMU arguments
    made by `cairn.virt.network` (none: no network at all). `serial` connects the first
    serial port to ``serial.sock`` in the working folder (a console for scripts and tests).
    """

    drive: str
    format: str | None = None
    interface: DiskBus = "ide"
    snapshot: bool = True
    memory_mib: int = 512
    cpus: int = 1
    accel: Accel = "auto"
    firmware: Firmware = "bios"
    more_drives: tuple[str, ...] = ()
    nics: tuple[str, ...] = ()
    serial: bool = False
    vnc_display: int | Literal["auto"] | None = None
    vnc_websocket: int | None = None
    vnc_password: str | None = None
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
        machine = "q35" if self.firmware == "uefi" else "pc"
        cmd = [
            QEMU, "-nodefaults", "-machine", machine, "-accel", accel,
            "-m", str(self.memory_mib), "-smp", str(self.cpus), "-vga", "std",
            "-boot", "strict=on", "-display", "none",
            "-qmp", f"unix:{qmp_socket},server=on,wait=off",
        ]
        cmd += self._firmware_args(qmp_socket.parent)
        cmd += self._drive_args(machine)
        cmd += list(self.nics) if self.nics else ["-nic", "none"]
        if accel == "kvm":
            cmd += ["-cpu", "host"]
        if self.serial:
            cmd += ["-serial", f"unix:{qmp_socket.parent / 'serial.sock'},server=on,wait=off"]
        return cmd + self._vnc_args()

    def _firmware_args(self, workdir: Path) -> list[str]:
        """OVMF reads its code read-only and keeps its variables in a copy of its own."""
        if self.firmware != "uefi":
            return []
        if not OVMF_CODE.exists():
            raise ToolMissing(str(OVMF_CODE), "ovmf")
        variables = workdir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, variables)
        return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={variables}"]

    def _drive_args(self, machine: str) -> list[str]:
        """Each disk as a device with a boot order; SATA is q35's own AHCI, or one added."""
        args = []
        if self.interface == "sata" and machine == "pc":
            args += ["-device", "ahci,id=ahci"]
        for index, drive in enumerate((self.drive, *self.more_drives)):
            fmt = self.format or detect_format(drive)
            spec = f"file={drive},format={fmt},if=none,id=disk{index}"
            if self.snapshot:
                spec += ",snapshot=on"
            args += ["-drive", spec, "-device", _disk_device(self.interface, machine, index)]
        return args

    def _vnc_args(self) -> list[str]:
        if self.vnc_display is None:
            return []
        display = "0,to=99" if self.vnc_display == "auto" else str(self.vnc_display)
        vnc = f"127.0.0.1:{display}"
        if self.vnc_websocket is not None:
            vnc += f",websocket=127.0.0.1:{self.vnc_websocket}"
        if self.vnc_password is not None:
            vnc += ",password=on"
        return ["-vnc", vnc]

    def start(self) -> None:
        """Start QEMU and connect to its QMP socket; on any failure nothing is left running."""
        if shutil.which(QEMU) is None:
            raise ToolMissing(QEMU, "qemu-system-x86")
        self._workdir = scratch.make(SCRATCH_PREFIX)
        qmp_socket = self._workdir / "qmp.sock"
        log = (self._workdir / "qemu.log").open("wb")
        try:
            self._process = subprocess.Popen(
                self.command(qmp_socket),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent if self.die_with_parent else None,
            )
            try:
                self._qmp = self._connect(qmp_socket)
                if self.vnc_password is not None:
                    self._qmp.execute("change-vnc-password", {"password": self.vnc_password})
            except VirtualMachineError:
                # KVM can abort QEMU just after its QMP socket opened: still KVM's failure.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=5)
                if self._process.poll() is not None:
                    self._raise_if_kvm_failed()
                raise
        except BaseException:
            self.stop()
            raise
        finally:
            log.close()

    def _connect(self, qmp_socket: Path) -> QmpClient:
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process is None or self._process.poll() is not None:
                self._raise_if_kvm_failed()
                raise VirtualMachineError(f"QEMU exited at start: {self.log_tail()}")
            with contextlib.suppress(FileNotFoundError, ConnectionRefusedError,
                                     ConnectionResetError, BrokenPipeError):
                return QmpClient(qmp_socket)
            if time.monotonic() > deadline:
                raise VirtualMachineError(
                    f"QEMU did not open its QMP socket within {self.start_timeout:.0f} s"
                )
            time.sleep(0.05)

    def _raise_if_kvm_failed(self) -> None:
        """QEMU has exited at start: raise `KvmCannotRun` when its last words blame KVM."""
        words = self.log_tail()
        if self.used_accel == "kvm" and "kvm" in words.lower():
            raise KvmCannotRun(f"KVM cannot run this guest: {words}")

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def status(self) -> str:
        """QEMU's run state: ``running``, ``internal-error``, ``guest-panicked``, ``shutdown``..."""
        return str(self._client().execute("query-status")["status"])

    def vnc_port(self) -> int | None:
        """The loopback TCP port VNC listens on (with ``vnc_display="auto"`` QEMU chose it)."""
        info = self._client().execute("query-vnc")
        return int(info["service"]) if info.get("enabled") else None

    def powerdown(self) -> None:
        """Press the virtual power button (ACPI): a guest that listens shuts itself down."""
        self._client().execute("system_powerdown")

    def disks(self) -> int:
        """How many disks QEMU has attached (with a medium): what the guest can see."""
        return sum(1 for b in self._client().execute("query-block") if b.get("inserted"))

    def kvm_failed(self) -> bool:
        """KVM opened but stopped this guest with an internal error (see the module docs)."""
        return self.used_accel == "kvm" and self.status() == "internal-error"

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

    def __exit__(self, *exc: object) -> None:
        self.stop()


def with_tcg_fallback(vm: VirtualMachine, run: Callable[[VirtualMachine], T]) -> T:
    """Start ``vm``, call ``run(vm)``, stop it; when ``run`` raises `KvmCannotRun`, remember
    that KVM is broken here and do it all once more under TCG. The one place that decides."""
    try:
        with vm:
            return run(vm)
    except KvmCannotRun:
        mark_kvm_broken()
        vm.accel = "tcg"
        with vm:
            return run(vm)


def _disk_device(bus: DiskBus, machine: str, index: int) -> str:
    """The ``-device`` for disk ``index``: IDE is two buses of two on ``pc``; q35's AHCI
    (which serves both IDE and SATA there) and an added AHCI have one disk per port."""
    boot = f"drive=disk{index},bootindex={index}"
    if bus == "virtio":
        return f"virtio-blk-pci,{boot}"
    if machine == "q35":
        return f"ide-hd,{boot},bus=ide.{index}"
    if bus == "sata":
        return f"ide-hd,{boot},bus=ahci.{index}"
    return f"ide-hd,{boot},bus=ide.{index // 2},unit={index % 2}"


def _reap(process: subprocess.Popen[bytes], timeout: float) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def die_with_parent() -> None:
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
