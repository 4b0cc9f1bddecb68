"""`cairn export`: serve a point or a clone over NBD until stopped."""

from __future__ import annotations

import argparse
import signal
import threading

from cairn.cli._common import add_repo, human_bytes, open_repo
from cairn.errors import UsageError
from cairn.virt.devices import open_device
from cairn.virt.nbd import NbdServer


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--nbd {text!r} is not HOST:PORT, e.g. 127.0.0.1:10809")
    return host.strip("[]"), int(port)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="serve a point (read-only) or a clone over NBD")
    add_repo(p)
    p.add_argument("target", help="point id, VOLUME@latest, or clone name")
    p.add_argument("--nbd", default="127.0.0.1:10809", metavar="HOST:PORT",
                   help="address to listen on (default 127.0.0.1:10809)")
    p.add_argument("--read-only", action="store_true", help="refuse writes (points always do)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    host, port = parse_address(args.nbd)
    repo = open_repo(args)
    device, what = open_device(repo, args.target, args.read_only)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = NbdServer(device, host, port, serialize=False)
        server.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.nbd}: {exc.strerror}: "
                         "choose another --nbd address") from None
    with server:
        mode = "read-only" if device.read_only else "read-write"
        print(f"exporting {what}, {human_bytes(device.size)}, {mode}, at "
              f"nbd://{host}:{server.port}/ (stop with Ctrl-C)", flush=True)
        stop.wait()
    print("export stopped")
    return 0
