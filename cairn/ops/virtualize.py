"""Virtualize: boot any point, or a machine point with all its disks, as a VM now, on clones,
with no copy of the image.

The VM boots *clones*, never the points: the guest may write (logs, journal replay) and
those writes land in the clones' overlays, while the points stay bit for bit what was
backed up. Each clone is served over NBD on loopback by this process
(`virt.boot.exported_clones`) and QEMU reads the disks from them, in the machine's order.
`cairn virtualize` and the web console both run this; which disks a reference names is
`ops.machine_points.disks_of`, as for `vm start` and `export`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cairn.ops.machine_points import Disks, disks_of
from cairn.store.clones import Clone
from cairn.store.repository import Repository
from cairn.virt.boot import disk_bus, exported_clones
from cairn.virt.qemu import KvmCannotRun, VirtualMachine, vnc_secret, with_tcg_fallback


@dataclass(frozen=True)
class VmOptions:
    """How `virtualize` runs a point: memory, VNC display (``auto``: any free one), the
    clone's name (made up when None; ``NAME.DISK`` for each disk of a machine point), and
    whether the clones stay after the VM stops."""

    memory_mib: int = 1024
    vnc_display: int | Literal["auto"] = "auto"
    name: str | None = None
    keep: bool = False


@dataclass(frozen=True)
class Running:
    """What `virtualize` booted (``point ID (VOLUME)`` or ``machine point ID (M: disks)``),
    its VM, the clones it writes to (in disk order), and its VNC console (loopback
    ``vnc_port``, which asks for ``vnc_password``)."""

    what: str
    vm: VirtualMachine
    clones: tuple[Clone, ...]
    vnc_port: int
    vnc_password: str


def clone_names(disks: Disks, name: str | None) -> list[str | None]:
    """The clones' names: ``name`` for one point, ``name.DISK`` for a machine's disks."""
    if name is None:
        return [None] * len(disks.points)
    return [f"{name}.{disk}" for disk in disks.names] if disks.names else [name]


def virtualize(repo: Repository, ref: str, stop: threading.Event,
               started: Callable[[Running], None], options: VmOptions | None = None
               ) -> list[Clone]:
    """Boot what ``ref`` names (a point, or a machine point with every disk in order) on
    clones until ``stop`` is set or the guest ends; returns the clones (removed by then
    unless ``options.keep``).

    ``started`` is called once the VM runs (again if KVM cannot run the guest and TCG takes
    over, with the new VM). The console listens on loopback only, behind a fresh password:
    `cairn virtualize` prints it, the web console proxies it behind its login.
    """
    opts = options or VmOptions()
    disks = disks_of(repo, ref)
    password = vnc_secret()
    with exported_clones(repo, disks.points, clone_names(disks, opts.name),
                         keep=opts.keep) as exports:
        clones = tuple(e.clone for e in exports)
        vm = VirtualMachine(drive=exports[0].url, more_drives=tuple(e.url for e in exports[1:]),
                            format="raw", snapshot=False, interface=disk_bus(len(exports)),
                            memory_mib=opts.memory_mib, vnc_display=opts.vnc_display,
                            vnc_password=password, die_with_parent=True)

        def watch(vm: VirtualMachine) -> None:
            port = vm.vnc_port()
            assert port is not None
            started(Running(disks.what, vm, clones, port, password))
            while not stop.wait(0.5) and vm.running():
                if vm.kvm_failed():
                    raise KvmCannotRun

        with_tcg_fallback(vm, watch)
    return list(clones)
