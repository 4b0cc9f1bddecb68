"""Virtualize: boot any point as a VM now, on a clone, with no copy of the image.

The VM boots a *clone*, never the point: the guest may write (logs, journal replay) and
those writes land in the clone's overlay, while the point stays bit for bit what was backed
up. The clone is served over NBD on loopback by this process (`virt.boot.exported_clone`)
and QEMU reads the disk from it. `cairn virtualize` and the web console both run this.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cairn.store.catalog import RecoveryPoint
from cairn.store.clones import Clone
from cairn.store.repository import Repository
from cairn.virt.boot import exported_clone
from cairn.virt.qemu import KvmCannotRun, VirtualMachine, vnc_secret, with_tcg_fallback


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
    """A point booted by `virtualize`: the point, its VM, the clone it writes to, and its
    VNC console (loopback ``vnc_port``, which asks for ``vnc_password``)."""

    point: RecoveryPoint
    vm: VirtualMachine
    clone: Clone
    vnc_port: int
    vnc_password: str


def virtualize(repo: Repository, ref: str, stop: threading.Event,
               started: Callable[[Running], None], options: VmOptions | None = None) -> Clone:
    """Boot the point ``ref`` names on a clone until ``stop`` is set or the guest ends;
    returns the clone (removed by then unless ``options.keep``).

    ``started`` is called once the VM runs (again if KVM cannot run the guest and TCG takes
    over, with the new VM). The console listens on loopback only, behind a fresh password:
    `cairn virtualize` prints it, the web console proxies it behind its login.
    """
    opts = options or VmOptions()
    point = repo.resolve(ref)
    password = vnc_secret()
    with exported_clone(repo, point, opts.name, keep=opts.keep) as export:
        vm = VirtualMachine(drive=export.url, format="raw", snapshot=False,
                            memory_mib=opts.memory_mib, vnc_display=opts.vnc_display,
                            vnc_password=password, die_with_parent=True)

        def watch(vm: VirtualMachine) -> None:
            port = vm.vnc_port()
            assert port is not None
            started(Running(point, vm, export.clone, port, password))
            while not stop.wait(0.5) and vm.running():
                if vm.kvm_failed():
                    raise KvmCannotRun

        with_tcg_fallback(vm, watch)
    return export.clone
