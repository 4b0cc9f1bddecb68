"""`cairn agent`: pair this machine with an appliance, choose what to protect, run jobs."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cairn import logs
from cairn.agent import config as agent_config
from cairn.agent.config import VolumeConfig
from cairn.agent.daemon import Agent, connect
from cairn.cli._common import add_json, human_bytes, print_json, report
from cairn.errors import SourceError, UsageError
from cairn.ops.pair import PairRequest, pair
from cairn.sources.image import ImageSource


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("agent", help="the agent of a protected machine: pair, protect, run")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    pair = actions.add_parser("pair", help="pair this machine with an appliance (once)")
    _config(pair)
    pair.add_argument("--appliance", required=True, metavar="URL",
                      help="e.g. https://10.0.0.5:8443")
    pair.add_argument("--token", required=True,
                      help="pairing token from `cairn machines add NAME` on the appliance")
    pair.add_argument("--fingerprint", help="expected sha256:... of the appliance certificate "
                                            "(logged by `cairn serve`); without it the "
                                            "certificate seen now is trusted and pinned")
    pair.add_argument("--state-dir", help="where the agent keeps its baselines "
                                          "(default /var/lib/cairn-agent)")
    add_json(pair)
    pair.set_defaults(handler=run_pair)

    protect = actions.add_parser("protect", help="protect a volume (image file or device)")
    _config(protect)
    protect.add_argument("--volume", required=True, help="volume name on this machine, e.g. sda")
    protect.add_argument("path", type=Path, help="image file or block device")
    protect.add_argument("--pre-freeze", metavar="SCRIPT", help="run before reading (freeze)")
    protect.add_argument("--post-thaw", metavar="SCRIPT", help="run after reading, always")
    protect.add_argument("--hook-timeout", type=float, default=60.0, metavar="SECONDS",
                         help="how long a freeze or thaw hook may run (default 60)")
    add_json(protect)
    protect.set_defaults(handler=run_protect)

    daemon = actions.add_parser("run", help="the agent daemon: take jobs and send changes")
    _config(daemon)
    daemon.add_argument("--once", action="store_true",
                        help="run the jobs waiting now, then exit")
    daemon.add_argument("--retry-seconds", type=float, default=300.0,
                        help="how long to keep retrying an unreachable appliance in a job")
    daemon.set_defaults(handler=run_daemon)

    status = actions.add_parser("status", help="show this agent's pairing and volumes")
    _config(status)
    add_json(status)
    status.set_defaults(handler=run_status)


def _config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=os.environ.get("CAIRN_AGENT_CONFIG"),
                   help=f"agent config (default $CAIRN_AGENT_CONFIG or "
                        f"{agent_config.DEFAULT_PATH})")


def run_pair(args: argparse.Namespace) -> int:
    if args.config is None:
        # Issue 15: nothing is written outside the paths given without saying so first.
        state = args.state_dir or "/var/lib/cairn-agent (or the config's state_dir)"
        print(f"pairing writes {agent_config.DEFAULT_PATH} and the appliance certificate under "
              f"{state}: give --config and --state-dir to write elsewhere", file=sys.stderr)
    paired = pair(PairRequest(args.appliance, args.token, args.fingerprint, args.config,
                              args.state_dir))
    trusted = ("; no --fingerprint given: the certificate seen now was trusted; compare it "
               "with the fingerprint `cairn serve` logged at start"
               if paired.trusted_on_first_use else "")
    return report(args.json, {"machine": paired.machine, "appliance": paired.appliance,
                              "fingerprint": paired.fingerprint, "config": str(paired.config),
                              "trusted_on_first_use": paired.trusted_on_first_use},
                  f"paired as {paired.machine} with {paired.appliance} (certificate "
                  f"{paired.fingerprint} pinned); config in {paired.config}{trusted}")


def run_protect(args: argparse.Namespace) -> int:
    config = agent_config.load(args.config)
    if (args.pre_freeze is None) != (args.post_thaw is None):
        raise UsageError("give --pre-freeze and --post-thaw together: a freeze needs its thaw")
    with ImageSource(args.path.resolve()) as source:
        size = source.size
    if size == 0:
        raise SourceError(f"{args.path} is empty: nothing to protect")
    with connect(config) as client:
        client.json("PUT", f"/api/v1/agent/volumes/{args.volume}", json={"size": size})
    config.volumes[args.volume] = VolumeConfig(str(args.path.resolve()), args.pre_freeze,
                                               args.post_thaw, args.hook_timeout)
    agent_config.save(config)
    return report(args.json, {"volume": args.volume, "path": str(args.path.resolve()),
                              "size": size, "machine": config.machine},
                  f"protecting {args.volume} ({args.path}, {human_bytes(size)}) on "
                  f"{config.machine}")


def run_daemon(args: argparse.Namespace) -> int:
    logs.setup("INFO")
    agent = Agent(agent_config.load(args.config), retry_seconds=args.retry_seconds)
    try:
        agent.run(once=args.once)
    finally:
        agent.close()
    return 0


def run_status(args: argparse.Namespace) -> int:
    config = agent_config.load(args.config)
    info = {"config": str(config.path), "appliance": config.appliance,
            "machine": config.machine, "fingerprint": config.fingerprint,
            "volumes": {n: v.path for n, v in config.volumes.items()}}
    if args.json:
        print_json(info)
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0
