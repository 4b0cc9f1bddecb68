"""`cairn export`: serve a point, a machine point (every disk) or a clone over NBD until
stopped (`cairn.ops.export`).

With ``--json`` it prints JSON Lines: one object when the exports are up (what a script
needs to connect: each disk's URL), one when they stopped."""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import threading
from pathlib import Path

from cairn.cli._common import (
    add_json,
    add_repo,
    human_bytes,
    is_cloud,
    open_repo,
    print_json_line,
    repo_location,
)
from cairn.errors import UsageError
from cairn.ops.export import EXPORT_ID_ENV, Export, ExportRequest, export
from cairn.units import parse_size


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--nbd {text!r} is not HOST:PORT, e.g. 127.0.0.1:10809")
    return host.strip("[]"), int(port)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="serve a point (read-only) or a clone over NBD")
    add_repo(p)
    p.add_argument("target", help="point id, VOLUME@latest, clone name, or a machine point "
                                  "(or MACHINE@latest: every disk, on PORT, PORT+1, ...)")
    p.add_argument("--nbd", default="127.0.0.1:10809", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:10809; port 0: free ones)")
    p.add_argument("--read-only", action="store_true", help="refuse writes (points always do)")
    p.add_argument("--tls", action="store_true",
                   help="require TLS with the repository's certificate (REPO/tls/cert.pem); "
                        "needed off loopback")
    p.add_argument("--tls-psk", type=Path, metavar="FILE",
                   help="require TLS with a pre-shared key instead: FILE holds "
                        "`identity:hexkey` lines (GnuTLS psktool's format); clients open "
                        "nbds://IDENTITY@HOST:PORT/NAME?tls-psk-file=FILE")
    p.add_argument("--cache", metavar="SIZE", type=_cache_size,
                   help="decoded blocks a point export keeps (default: as much as the "
                        "point holds, within what is left of one budget shared by every "
                        "export of the machine, a quarter of its memory); a point read "
                        "again is served from memory, several times as fast")
    add_json(p)
    p.set_defaults(handler=run)


def _cache_size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    tls, cert = tls_context(args) if args.tls else (None, None)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with open_repo(args) as repo, \
            export(repo, ExportRequest(args.target, host, port, args.read_only, tls,
                                       args.tls_psk, args.cache,
                                       os.environ.get(EXPORT_ID_ENV))) as served:
        if args.json:
            print_json_line({"event": "exporting", "exports": [
                {"disk": one.disk, "what": one.what, "size": one.size,
                 "read_only": one.read_only, "url": one.url, "cache_bytes": one.cache_bytes}
                for one in served],
                "ca_certificate": None if cert is None else str(cert),
                "psk_file": None if args.tls_psk is None else str(args.tls_psk)})
        else:
            _started(served, cert, args.tls_psk)
        # Not stop.wait(): the kernel may hand SIGTERM to any of the server's threads, and
        # Python runs the handler only once the main thread runs again; one blocked on the
        # event without a timeout never did (an export that ignored SIGTERM under load).
        while not stop.wait(0.5):
            pass
    if args.json:
        print_json_line({"event": "stopped"})
    else:
        print("export stopped")
    return 0


def _started(served: list[Export], cert: Path | None, psk: Path | None) -> None:
    for one in served:
        mode = "read-only" if one.read_only else "read-write"
        disk = f"disk {one.disk}: " if one.disk else ""
        print(f"exporting {disk}{one.what}, {human_bytes(one.size)}, {mode}, at {one.url} "
              "(stop with Ctrl-C)", flush=True)
    if cert is not None:
        print(f"clients verify the server with {cert} as their CA certificate", flush=True)
    if psk is not None:
        print(f"clients need a key from {psk} (libnbd: append ?tls-psk-file={psk} to the "
              "URL)", flush=True)
