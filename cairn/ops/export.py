"""Export: serve a point (always read-only) or a clone over NBD, for as long as a block runs.

A machine point is served whole: one export per disk, in the machine's disk order, each on
its own port (the next ports after the one asked for, or free ones for port 0) under its
own secret name, so a client attaches the disks as the machine had them.

The export is reachable only with a secret: its name is random (in the URL, never listed to
clients), and off loopback the connection must be TLS (the caller's context, normally the
repository's certificate from ``REPO/tls/``, or a pre-shared key file: then `nbd_psk`'s
qemu-nbd relay is the TLS end). Clients that sit idle are closed, and only a few may
connect at once. An exported point is pinned, so `delete --now` refuses it (or waits
for the export) instead of pulling blocks from under a client.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cairn import scratch
from cairn.errors import UsageError
from cairn.ops.cache_budget import machine_budget, reserve
from cairn.ops.machine_points import disks_of
from cairn.store.clone_writers import Holder, reading, writing
from cairn.store.clones import CloneNotFound, get_clone
from cairn.store.pins import pin_point
from cairn.store.reader import BlockCache, PointReader
from cairn.store.repository import Repository
from cairn.virt.devices import Device, PointDevice, open_device
from cairn.virt.nbd import NbdServer
from cairn.virt.nbd_psk import PskListen, psk_identities, psk_relay

IDLE_TIMEOUT = 600.0
PSK_PREFIX = "cairn-psk-"
EXPORT_ID_ENV = "CAIRN_EXPORT_ID"
"""Set by the appliance for the `cairn export` it runs: that export's id (`ExportRequest`)."""
MAX_CLIENTS = 8


@dataclass(frozen=True)
class ExportRequest:
    """What to serve (a point or machine point reference, or a clone name) and where;
    ``port`` 0 takes any free one. ``tls`` (a server context) or ``psk`` (a GnuTLS key
    file) is required unless ``host`` is loopback."""

    target: str
    host: str
    port: int
    read_only: bool = False
    tls: ssl.SSLContext | None = None
    psk: Path | None = None
    cache_bytes: int | None = None
    """Bound of the decoded blocks a point export keeps (its disks share them); None: a
    share of the machine's budget (`cairn.ops.cache_budget`). A point read again (a disk
    copied twice, a VM rebooted) is served from verified blocks held, without
    decompressing and hashing it again: several times as fast."""
    export_id: str | None = None
    """The appliance's id of this export (`cairn.ops.exports`), so that a VM or an export
    refused because this one holds its clone names the one to stop; None: run by hand."""


@dataclass(frozen=True)
class Export:
    """A running export: what it serves (``point ID (VOLUME)`` or ``clone NAME``), its size,
    the URL clients open, secret name included, and the machine's disk it is ("" when the
    target was not a machine point), and the bound of the decoded blocks its point's export keeps
    (shared by a machine point's disks; 0 for a clone)."""

    what: str
    size: int
    read_only: bool
    url: str
    disk: str = ""
    cache_bytes: int = 0


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class _Disk:
    disk: str
    device: Device
    what: str
    cache_bytes: int = 0


def _disks(repo: Repository, request: ExportRequest, stack: contextlib.ExitStack
           ) -> list[_Disk]:
    """What ``request.target`` serves: a clone is one disk (no other process writes it while
    served, `cairn.store.clone_writers`), a point one, a machine point every disk (clone names
    first, then as `ops.machine_points.disks_of` resolves); a point's disks read through one
    cache, its share of the machine's budget held until ``stack`` closes."""
    try:
        clone = get_clone(repo, request.target)
    except CloneNotFound:
        return _point_disks(repo, request, stack)
    if request.read_only:
        stack.enter_context(reading(repo, clone.name, _holder(request)))
    else:
        stack.enter_context(writing(repo, clone.name, _holder(request)))
    device, what = open_device(repo, clone.name, request.read_only)
    return [_Disk("", device, what)]


def _holder(request: ExportRequest) -> Holder:
    """This export as a refusal names it: the appliance's by its id, one run by hand by its
    pid."""
    mode = "read-only" if request.read_only else "writable"
    if request.export_id is not None:
        return Holder(f"a {mode} export {request.export_id} (pid {os.getpid()})",
                      f"stop it first (`cairn exports stop {request.export_id}`)")
    return Holder(f"a {mode} export (pid {os.getpid()})",
                  "stop it first (Ctrl-C stops a `cairn export`; `cairn exports list` shows "
                  "the appliance's, `cairn exports stop ID` stops one)")


def _point_disks(repo: Repository, request: ExportRequest, stack: contextlib.ExitStack
                 ) -> list[_Disk]:
    found = disks_of(repo, request.target)
    want = request.cache_bytes or sum(point.allocated for point in found.points)
    size = stack.enter_context(reserve(machine_budget(), want,
                                       exact=request.cache_bytes is not None))
    cache = BlockCache(repo.chunks, size)
    stack.callback(cache.close)
    return [_Disk(disk, PointDevice(PointReader(repo, point, cache)),
                  f"point {point.id} ({point.volume})", size)
            for disk, point in zip(found.names or ("",), found.points, strict=True)]


@contextlib.contextmanager
def export(repo: Repository, request: ExportRequest) -> Iterator[list[Export]]:
    """Serve ``request.target`` until the block ends: one export, or one per disk of a
    machine point (on ``request.port``, the next port, ...)."""
    where = f"[{request.host}]" if ":" in request.host else request.host
    _check_security(request, where)
    scheme = "nbd" if request.tls is None and request.psk is None else "nbds"
    user = f"{psk_identities(request.psk)[0]}@" if request.psk else ""
    served = []
    with contextlib.ExitStack() as stack:
        disks = _disks(repo, request, stack)
        if request.port and request.port + len(disks) > 1 << 16:
            raise UsageError(f"--nbd port {request.port}: {len(disks)} disks need as many "
                             "ports from it; give a lower port, or 0 for free ones")
        for disk in disks:
            stack.enter_context(contextlib.closing(disk.device))
        for index, disk in enumerate(disks):
            port = request.port + index if request.port else 0
            name = secrets.token_urlsafe(18)
            if isinstance(disk.device, PointDevice):
                stack.enter_context(pin_point(repo, disk.device.reader.point,
                                              f"cairn export on {where}:{port}"))
            port = _serve(stack, disk.device, request, port, name)
            served.append(Export(disk.what, disk.device.size, disk.device.read_only,
                                 f"{scheme}://{user}{where}:{port}/{name}", disk.disk,
                                 disk.cache_bytes))
        yield served


def _check_security(request: ExportRequest, where: str) -> None:
    if request.tls is not None and request.psk is not None:
        raise UsageError("--tls and --tls-psk exclude each other: a client uses the "
                         "certificate or a key, choose one")
    if request.tls is None and request.psk is None and not is_loopback(request.host):
        raise UsageError(f"--nbd {where}:{request.port} is reachable from the network: add "
                         "--tls (clients then need REPO/tls/cert.pem) or --tls-psk FILE, or "
                         "listen on 127.0.0.1")


def _serve(stack: contextlib.ExitStack, device: Device, request: ExportRequest, port: int,
           name: str) -> int:
    """Start one disk's server; its port. With a pre-shared key, cairn's server listens on
    a private unix socket and the qemu-nbd relay on ``port``."""
    if request.psk is None:
        return stack.enter_context(NbdServer(
            device, request.host, port, name, serialize=False, tls=request.tls,
            idle_timeout=IDLE_TIMEOUT, max_clients=MAX_CLIENTS)).port
    listen = PskListen(request.host, port, name, request.psk, device.read_only, MAX_CLIENTS)
    folder = scratch.make(PSK_PREFIX)
    stack.callback(shutil.rmtree, folder, True)
    inner_name = secrets.token_urlsafe(18)
    stack.enter_context(NbdServer(device, export_name=inner_name, serialize=False,
                                  unix_path=folder / "disk.sock", max_clients=MAX_CLIENTS))
    return stack.enter_context(psk_relay(folder / "disk.sock", inner_name, folder, listen))
