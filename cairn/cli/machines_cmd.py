"""`cairn machines`: list the protected machines, add one (pairing token), remove one."""

from __future__ import annotations

import argparse

from cairn.agent.client import ApplianceClient
from cairn.cli._appliance import admin_client, admin_command, machine_action, pairing_url
from cairn.cli._common import listing, print_json, report, when


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p, actions = admin_command(sub, "machines", "list protected machines; add or remove one")
    add = actions.add_parser("add", help="add a machine and print its one-time pairing token; "
                                         "with --qemu, a VM the appliance backs up itself")
    add.add_argument("name")
    add.add_argument("--qemu", metavar="SOCKET",
                     help="QMP socket (on the appliance host) of a running QEMU VM: no agent, "
                          "the appliance backs it up on its schedule")
    add.add_argument("--guest-agent", metavar="SOCKET",
                     help="with --qemu: the guest agent's socket, to freeze file systems")
    machine_action(actions, "remove", "forget a machine (its points stay)")
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
            return report(args.json, {"machine": args.name, "removed": True},
                          f"machine {args.name} removed; its recovery points stay in the "
                          "repository")
        machines = client.json("GET", "/api/v1/machines")
    return listing(args.json, machines, ["MACHINE", "STATUS", "LAST SEEN", "VOLUMES", "SCHEDULE"],
                   lambda m: [m["name"], "online" if m["online"] else
                              ("offline" if m["paired"] else "unpaired"),
                              when(m["last_seen"]) if m["last_seen"] else "-",
                              ", ".join(v["name"] for v in m["volumes"]) or "-",
                              _schedule(m["schedule"])])


def _schedule(s: dict[str, object] | None) -> str:
    if not s:
        return "-"
    every = f"every {s['every']:g}s" if s["every"] else f"cron {s['cron']}"
    return every + (f", keep {s['retention']}" if s["retention"] else "")


def _add_agentless(client: ApplianceClient, args: argparse.Namespace) -> int:
    answer = client.json("POST", "/api/v1/agentless-machines",
                         json={"name": args.name, "qemu": args.qemu,
                               "guest_agent": args.guest_agent})
    return report(args.json, answer,
                  f"machine {answer['machine']} added: the appliance backs it up through "
                  f"{answer['qemu']}; give it a schedule with `cairn schedule set "
                  f"{answer['machine']} --every 1h`")
