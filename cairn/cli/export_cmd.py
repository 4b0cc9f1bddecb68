"""`cairn export`: serve a point or a clone over NBD until stopped.

The export is reachable only with a secret: its name is random (printed in the URL, never
listed to clients), and off loopback the connection must be TLS (``--tls``, with the
repository's certificate from ``REPO/tls/``, the one the appliance uses; clients verify it
with that ``cert.pem`` as their CA). Clients that sit idle are closed, and only a few may
connect at once.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import secrets
import signal
import ssl
import threading
from pathlib import Path

from cairn.cli._common import add_repo, human_bytes, is_cloud, open_repo, repo_location
from cairn.errors import UsageError
from cairn.store.pins import pin_point
from cairn.virt.devices import PointDevice, open_device
from cairn.virt.nbd import NbdServer

IDLE_TIMEOUT = 600.0
MAX_CLIENTS = 8


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--nbd {text!r} is not HOST:PORT, e.g. 127.0.0.1:10809")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="serve a point (read-only) or a clone over NBD")
    add_repo(p)
    p.add_argument("target", help="point id, VOLUME@latest, or clone name")
    p.add_argument("--nbd", default="127.0.0.1:10809", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:10809)")
    p.add_argument("--read-only", action="store_true", help="refuse writes (points always do)")
    p.add_argument("--tls", action="store_true",
                   help="require TLS with the repository's certificate (REPO/tls/cert.pem); "
                        "needed off loopback")
    p.set_defaults(handler=run)


def tls_context(args: argparse.Namespace) -> tuple[ssl.SSLContext, Path]:
    """The server context of the repository's certificate, made at first use."""
    from cairn.appliance.tls import ensure_certificate

    location = repo_location(args)
    if is_cloud(location):
        raise UsageError("--tls uses a local repository's certificate: export from the "
                         "appliance's repository, or over loopback and an SSH tunnel")
    cert, key, _ = ensure_certificate(Path(location) / "tls")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context, cert


def run(args: argparse.Namespace) -> int:
    host, port = parse_address(args.nbd)
    if not args.tls and not is_loopback(host):
        raise UsageError(f"--nbd {args.nbd} is reachable from the network: add --tls (clients "
                         "then need REPO/tls/cert.pem), or listen on 127.0.0.1")
    tls, cert = tls_context(args) if args.tls else (None, None)
    repo = open_repo(args)
    device, what = open_device(repo, args.target, args.read_only)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    name = secrets.token_urlsafe(18)
    server = NbdServer(device, host, port, name, serialize=False, tls=tls,
                       idle_timeout=IDLE_TIMEOUT, max_clients=MAX_CLIENTS)
    pinned = (pin_point(repo, device.reader.point, f"cairn export on {args.nbd}")
              if isinstance(device, PointDevice) else contextlib.nullcontext())
    with pinned, server:
        mode = "read-only" if device.read_only else "read-write"
        scheme = "nbds" if tls else "nbd"
        where = f"[{host}]" if ":" in host else host
        print(f"exporting {what}, {human_bytes(device.size)}, {mode}, at "
              f"{scheme}://{where}:{server.port}/{name} (stop with Ctrl-C)", flush=True)
        if cert is not None:
            print(f"clients verify the server with {cert} as their CA certificate", flush=True)
        stop.wait()
    print("export stopped")
    return 0
