"""Booting points: a throwaway or kept clone, exported over NBD, run by QEMU.

Both `virtualize` and `screenshot_verify` boot a *clone*, never the point: the guest may
write (logs, journal replay) and those writes land in the clone's overlay, while the point
stays bit for bit what was backed up. The NBD export runs in this process on a free
loopback port and QEMU reads the disk from it, so booting needs no copy of the image.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cairn.store.catalog import RecoveryPoint, Verification
from cairn.store.clones import Clone, CloneVolume, create_clone, remove_clone
from cairn.store.pins import pin_point
from cairn.store.repository import Repository
from cairn.virt.devices import CloneDevice
from cairn.virt.nbd import NbdServer
from cairn.virt.qemu import KvmCannotRun, VirtualMachine, vnc_secret, with_tcg_fallback
from cairn.virt.screenshot import Verdict, verify_boot


@dataclass(frozen=True)
class Exported:
    clone: Clone
    url: str


@contextlib.contextmanager
def exported_clone(repo: Repository, point: RecoveryPoint, name: str | None = None,
                   keep: bool = False) -> Iterator[Exported]:
    """A clone of ``point`` served over NBD on loopback for as long as the block runs."""
    clone = create_clone(repo, point, name)
    volume = CloneVolume(repo, clone)
    try:
        with pin_point(repo, point, f"a boot of clone {clone.name}"), \
                NbdServer(CloneDevice(volume), "127.0.0.1", 0, serialize=False) as server:
            yield Exported(clone, f"nbd://127.0.0.1:{server.port}")
        volume.flush()
    finally:
        volume.close()
        if not keep:
            remove_clone(repo, clone.name)


# IDE, which every guest drives, has room for four disks; a bigger machine boots on SATA.
IDE_DISKS = 4


def screenshot_verify(repo: Repository, point: RecoveryPoint, expect_text: str | None,
                      timeout: float, out: Path | None = None,
                      more: Sequence[RecoveryPoint] = ()) -> tuple[Verdict, Verification]:
    """Boot a throwaway clone of ``point`` and record the verdict beside the point.

    ``more`` are the points of the machine's other disks at the same moment: each is
    attached (a throwaway clone of its own) after the boot disk, so the machine boots as
    it would after a restore, with every disk it mounts. The verdict is recorded with the
    boot disk's point and says how many disks QEMU had attached.
    """
    folder = repo.path / "verifications"
    folder.mkdir(exist_ok=True)
    shot = folder / f"{point.id}.png"
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(exported_clone(repo, p)).url for p in (point, *more)]
        verdict = verify_boot(urls[0], more_drives=tuple(urls[1:]), out=shot,
                              expect_text=expect_text, timeout=timeout, snapshot=False,
                              drive_format="raw",
                              interface="ide" if len(urls) <= IDE_DISKS else "sata")
    if out is not None and shot.exists():
        out.write_bytes(shot.read_bytes())
    reason = verdict.reason + (f" (booted with {verdict.disks} disks)" if more else "")
    record = Verification(point.id, verdict.status, reason, verdict.ocr_text,
                          str(shot) if shot.exists() else "", round(verdict.seconds, 2),
                          time.time())
    repo.catalog.record_verification(record)
    return verdict, record


@dataclass(frozen=True)
class VmOptions:
    """How `virtualize` runs a point: memory, VNC display (``auto``: any free one), the
    clone's name (made up when None), and whether the clone stays after the VM stops."""

    memory_mib: int = 1024
    vnc_display: int | Literal["auto"] = "auto"
    name: str | None = None
    keep: bool = False


@dataclass(frozen=True)
class Running:
    """A point booted by `virtualize`: its VM, the clone it writes to, and its VNC console
    (loopback ``vnc_port``, which asks for ``vnc_password``)."""

    vm: VirtualMachine
    clone: Clone
    vnc_port: int
    vnc_password: str


def virtualize(repo: Repository, point: RecoveryPoint, stop: threading.Event,
               started: Callable[[Running], None], options: VmOptions | None = None) -> Clone:
    """Boot ``point`` on a clone until ``stop`` is set or the guest ends; returns the clone.

    ``started`` is called once the VM runs (again if KVM cannot run the guest and TCG takes
    over, with the new VM). The console listens on loopback only, behind a fresh password:
    `cairn virtualize` prints it, the web console proxies it behind its login.
    """
    opts = options or VmOptions()
    password = vnc_secret()
    with exported_clone(repo, point, opts.name, keep=opts.keep) as export:
        vm = VirtualMachine(drive=export.url, format="raw", snapshot=False,
                            memory_mib=opts.memory_mib, vnc_display=opts.vnc_display,
                            vnc_password=password, die_with_parent=True)

        def watch(vm: VirtualMachine) -> None:
            port = vm.vnc_port()
            assert port is not None
            started(Running(vm, export.clone, port, password))
            while not stop.wait(0.5) and vm.running():
                if vm.kvm_failed():
                    raise KvmCannotRun

        with_tcg_fallback(vm, watch)
    return export.clone
