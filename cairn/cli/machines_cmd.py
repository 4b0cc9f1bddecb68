"""`cairn machines`: list the protected machines, add one (pairing token), remove one."""

from __future__ import annotations

import argparse

from cairn.agent.client import ApplianceClient
from cairn.cli._appliance import add_appliance, admin_client, pairing_url
from cairn.cli._common import add_json, print_json, table, when


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("machines", help="list protected machines; add or remove one")
    add_appliance(p)
    add_json(p)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    add = actions.add_parser("add", help="add a machine and print its one-time pairing token; "
                                         "with --qemu, a VM the appliance backs up itself")
    add.add_argument("name")
    add.add_argument("--qemu", metavar="SOCKET",
                     help="QMP socket (on the appliance host) of a running QEMU VM: no agent, "
                          "the appliance backs it up on its schedule")
    add.add_argument("--guest-agent", metavar="SOCKET",
                     help="with --qemu: the guest agent's socket, to freeze file systems")
    remove = actions.add_parser("remove", help="forget a machine (its points stay)")
    remove.add_argument("name")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        if args.action == "add" and args.qemu:
            return _add_agentless(client, args)
        if args.action == "add":
            answer = client.json("POST", "/api/v1/machines", json={"name": args.name})
            if args.json:
                print_json(answer)
            else:
                url = pairing_url(client.url)
                print(f"machine {answer['machine']} added; pair it within 24 h with:\n"
                      f"  cairn agent pair --appliance {url} --token "
                      f"{answer['pairing_token']}")
                if url != client.url:
                    print(f"({url} is this host's address; agents cannot reach "
                          f"{client.url}: use the name they reach it by if it differs)")
            return 0
        if args.action == "remove":
            client.request("DELETE", f"/api/v1/machines/{args.name}")
            print(f"machine {args.name} removed; its recovery points stay in the repository")
            return 0
        machines = client.json("GET", "/api/v1/machines")
    if args.json:
        print_json(machines)
        return 0
    table(["MACHINE", "STATUS", "LAST SEEN", "VOLUMES", "SCHEDULE"],
          [[m["name"], "online" if m["online"] else ("offline" if m["paired"] else "unpaired"),
            when(m["last_seen"]) if m["last_seen"] else "-",
            ", ".join(v["name"] for v in m["volumes"]) or "-",
            _schedule(m["schedule"])] for m in machines])
    return 0


def _schedule(s: dict[str, object] | None) -> str:
    if not s:
        return "-"
    every = f"every {s['every']:g}s" if s["every"] else f"cron {s['cron']}"
    return every + (f", keep {s['retention']}" if s["retention"] else "")


def _add_agentless(client: ApplianceClient, args: argparse.Namespace) -> int:
    answer = client.json("POST", "/api/v1/agentless-machines",
                         json={"name": args.name, "qemu": args.qemu,
                               "guest_agent": args.guest_agent})
    if args.json:
        print_json(answer)
    else:
        print(f"machine {answer['machine']} added: the appliance backs it up through "
              f"{answer['qemu']}; give it a schedule with `cairn schedule set "
              f"{answer['machine']} --every 1h`")
    return 0
