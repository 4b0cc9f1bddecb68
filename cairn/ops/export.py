"""Export: serve a point (always read-only) or a clone over NBD, for as long as a block runs.

The export is reachable only with a secret: its name is random (in the URL, never listed to
clients), and off loopback the connection must be TLS (the caller's context, normally the
repository's certificate from ``REPO/tls/``). Clients that sit idle are closed, and only a
few may connect at once. An exported point is pinned, so `delete --now` refuses it (or waits
for the export) instead of pulling blocks from under a client.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

from cairn.errors import UsageError
from cairn.store.pins import pin_point
from cairn.store.repository import Repository
from cairn.virt.devices import PointDevice, open_device
from cairn.virt.nbd import NbdServer

IDLE_TIMEOUT = 600.0
MAX_CLIENTS = 8


@dataclass(frozen=True)
class ExportRequest:
    """What to serve (a point reference or a clone name) and where; ``port`` 0 takes any
    free one. ``tls`` is required unless ``host`` is loopback."""

    target: str
    host: str
    port: int
    read_only: bool = False
    tls: ssl.SSLContext | None = None


@dataclass(frozen=True)
class Export:
    """A running export: what it serves (``point ID (VOLUME)`` or ``clone NAME``), its size,
    and the URL clients open, secret name included."""

    what: str
    size: int
    read_only: bool
    url: str


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@contextlib.contextmanager
def export(repo: Repository, request: ExportRequest) -> Iterator[Export]:
    """Serve ``request.target`` until the block ends."""
    where = f"[{request.host}]" if ":" in request.host else request.host
    if request.tls is None and not is_loopback(request.host):
        raise UsageError(f"--nbd {where}:{request.port} is reachable from the network: add "
                         "--tls (clients then need REPO/tls/cert.pem), or listen on 127.0.0.1")
    device, what = open_device(repo, request.target, request.read_only)
    name = secrets.token_urlsafe(18)
    server = NbdServer(device, request.host, request.port, name, serialize=False,
                       tls=request.tls, idle_timeout=IDLE_TIMEOUT, max_clients=MAX_CLIENTS)
    pinned = (pin_point(repo, device.reader.point, f"cairn export on {where}:{request.port}")
              if isinstance(device, PointDevice) else contextlib.nullcontext())
    with pinned, server:
        scheme = "nbds" if request.tls else "nbd"
        yield Export(what, device.size, device.read_only,
                     f"{scheme}://{where}:{server.port}/{name}")
