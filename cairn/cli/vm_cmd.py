"""`cairn vm`: run points as machines owned by the appliance (start, list, stop, console)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cairn.cli import _vm_lans
from cairn.cli._appliance import add_appliance, admin_client
from cairn.cli._common import add_json, print_json, table
from cairn.store.keys import key_text, read_key_file


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("vm", help="run points as VMs owned by the appliance",
                       description="VMs run inside the appliance (`cairn serve`) and outlive "
                                   "this command; `cairn vm list` finds them again.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    start = actions.add_parser("start", help="start a VM on a new clone of a point")
    start.add_argument("cloud", nargs="?", metavar="s3://BUCKET/PREFIX",
                       help="run a point of this cloud repository, read on demand (the "
                            "appliance reaches it at --endpoint, else with its endpoint "
                            "profile or CAIRN_S3_* settings, and opens it with --key-file, "
                            "both sent to it and kept with the VM, else its own key); "
                            "default: the appliance's own repository")
    start.add_argument("source", help="point id, VOLUME@latest (MACHINE@latest), or a kept "
                                      "clone's name")
    start.add_argument("--name", help="VM name (default: the clone's name)")
    start.add_argument("--cpus", type=int, default=2, help="virtual CPUs (default 2)")
    start.add_argument("--memory", type=int, default=2048, help="MiB of memory (default 2048)")
    start.add_argument("--network", action="append", default=[], metavar="NET",
                       help="none (default), isolated:LAN (declared with `cairn vm lan add`), "
                            "nat[,hostfwd=tcp::8080-:80], bridge:BR; repeat for several NICs")
    start.add_argument("--firmware", choices=["auto", "bios", "uefi"], default="auto",
                       help="auto: UEFI when the disk has an EFI system partition")
    start.add_argument("--disk-bus", choices=["auto", "virtio", "sata", "ide"], default="auto",
                       help="auto: virtio for Linux guests, else SATA")
    listing = actions.add_parser("list", help="the VMs with their state, console and clone")
    stop = actions.add_parser("stop", help="ACPI shutdown, forced after --timeout")
    stop.add_argument("name")
    stop.add_argument("--timeout", type=float, default=30.0,
                      help="seconds to wait for the guest to power off (default 30)")
    what = stop.add_mutually_exclusive_group()
    what.add_argument("--keep-as-point", action="store_true",
                      help="store what the VM wrote as a new point of its volume (failback)")
    what.add_argument("--discard", action="store_true",
                      help="remove the clone and what the VM wrote (default: keep the clone)")
    console = actions.add_parser("console", help="how to reach a VM's screen")
    console.add_argument("name")
    for parser in (start, listing, stop, console, *_vm_lans.register(actions)):
        add_appliance(parser)
        add_json(parser)
        parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        if args.action == "lan":
            _vm_lans.run(client, args)
            return 0
        if args.action == "start":
            answer = client.json("POST", "/api/v1/vms", json={
                "source": args.source, "repo": args.cloud, "name": args.name, "cpus": args.cpus,
                "memory_mib": args.memory, "networks": args.network,
                "firmware": args.firmware, "disk_bus": args.disk_bus, "key": _key(args),
                "endpoint": args.endpoint if args.cloud else None})
        elif args.action == "stop":
            answer = client.json("POST", f"/api/v1/vms/{args.name}/stop", json={
                "keep_as_point": args.keep_as_point, "discard": args.discard,
                "timeout": args.timeout}, timeout=args.timeout + 120)
        elif args.action == "console":
            answer = client.json("GET", f"/api/v1/vms/{args.name}/console")
        else:
            answer = client.json("GET", "/api/v1/vms")
    if args.json:
        print_json(answer)
    else:
        SHOW[args.action](answer)
    return 0


def _key(args: argparse.Namespace) -> str | None:
    """The cloud repository's key for the appliance: the line of ``--key-file``, read here
    (the appliance may be another machine), only with a cloud repository."""
    if args.cloud is None or args.key_file is None:
        return None
    return key_text(read_key_file(Path(args.key_file)))


def _show_started(vm: dict[str, Any]) -> None:
    origin = "" if vm["origin"] == "local" else f" of {vm['origin']}"
    print(f"VM {vm['name']} running point {vm['point']} ({vm['volume']}){origin} on clone "
          f"{', '.join(vm['clones'])}: {vm['firmware']}, {vm['disk_bus']}, "
          f"{vm['cpus']} CPUs, {vm['memory_mib']} MiB, network "
          f"{', '.join(vm['networks']) or 'none'}; `cairn vm console {vm['name']}` to see it")


def _show_list(vms: list[dict[str, Any]]) -> None:
    table(["VM", "STATE", "POINT", "VOLUME", "FROM", "NETWORK", "VNC", "CLONE"],
          [[v["name"], v["state"], v["point"], v["volume"], v["origin"],
            ", ".join(v["networks"]) or "none", v["vnc"] or "-", ", ".join(v["clones"])]
           for v in vms])


def _show_stopped(answer: dict[str, Any]) -> None:
    vm = answer["vm"]
    how = "forced off after the timeout" if answer["forced"] else "stopped"
    if answer["point"]:
        after = f"what it wrote is point {answer['point']} of {vm['volume']}"
    elif answer["kept_clones"]:
        repo = "" if vm["origin"] == "local" else f"{vm['origin']} "
        after = (f"clone {', '.join(answer['kept_clones'])} kept (start it again with "
                 f"`cairn vm start {repo}{answer['kept_clones'][0]}`, or `cairn clone-rm` "
                 "it)")
    else:
        after = "its clone is removed"
    print(f"VM {vm['name']} {how}; {after}")


def _show_console(console: dict[str, Any]) -> None:
    if not console["vnc"]:
        print("the VM is not running: no console")
        return
    print(f"VNC {console['vnc']} (loopback of the appliance), password {console['password']}")
    print(f"from elsewhere: ssh -L 5900:{console['vnc']} APPLIANCE, then a VNC viewer on "
          "localhost:5900")
    if console["serial"]:
        print(f"serial console: unix socket {console['serial']} (e.g. `socat - UNIX:...`)")


SHOW = {"start": _show_started, "list": _show_list, "stop": _show_stopped,
        "console": _show_console}
