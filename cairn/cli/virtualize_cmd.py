"""`cairn virtualize`: boot any point (or a machine point, every disk) as a VM now, from
clones, with no copy of the image.

With ``--json`` it prints JSON Lines: one object each time the VM starts (a second when
KVM failed and it started again under TCG), one when it stopped."""

from __future__ import annotations

import argparse
import signal
import threading

from cairn.cli._common import add_json, add_point, add_repo, open_repo, print_json_line
from cairn.errors import UsageError
from cairn.ops.virtualize import Running, VmOptions, virtualize


def vnc_display(text: str) -> int:
    host, _, port = text.rpartition(":")
    if host not in ("127.0.0.1", "localhost") or not port.isdigit() or not \
            5900 <= int(port) < 6000:
        raise UsageError(f"--vnc {text!r}: give 127.0.0.1:PORT with PORT 5900-5999 "
                         "(VNC listens on loopback only; tunnel it to reach it remotely)")
    return int(port) - 5900


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("virtualize", help="boot a point as a virtual machine (QEMU, VNC)")
    add_repo(p)
    add_point(p, more="; a machine point (or MACHINE@latest) boots with every disk")
    p.add_argument("--memory", type=int, default=1024, help="MiB of memory (default 1024)")
    p.add_argument("--vnc", default="127.0.0.1:5901", help="VNC address (default 127.0.0.1:5901)")
    p.add_argument("--name", help="name of the clone the VM runs on (NAME.DISK for each "
                                  "disk of a machine point)")
    p.add_argument("--keep-clone", action="store_true",
                   help="keep the clones (and what the VM wrote) after the VM stops")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    display = vnc_display(args.vnc)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    runs = 0

    def started(run: Running) -> None:
        nonlocal runs
        runs += 1
        if args.json:
            print_json_line({"event": "running", "what": run.what,
                             "clones": [c.name for c in run.clones],
                             "accel": run.vm.used_accel, "vnc": args.vnc,
                             "vnc_password": run.vnc_password})
            return
        if runs > 1:
            print("KVM cannot run this guest here; started again under TCG", flush=True)
        names = ", ".join(c.name for c in run.clones)
        print(f"VM of {run.what} running on clone{'s' * (len(run.clones) > 1)} {names} "
              f"({run.vm.used_accel}); VNC at {args.vnc}, password {run.vnc_password}; "
              "stop with Ctrl-C", flush=True)

    with open_repo(args) as repo:
        clones = virtualize(repo, args.point, stop, started,
                            VmOptions(args.memory, display, args.name, args.keep_clone))
    if args.json:
        print_json_line({"event": "stopped", "clones": [c.name for c in clones],
                         "clones_kept": args.keep_clone})
        return 0
    names = ", ".join(c.name for c in clones)
    kept = (f"clone{'s' * (len(clones) > 1)} {names} kept" if args.keep_clone else
            "clones removed" if len(clones) > 1 else "clone removed")
    print(f"VM stopped; {kept}")
    return 0
