"""`cairn serve`: run the appliance (REST API with OpenAPI at /docs, scheduler, jobs)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cairn.appliance import config as appliance_config
from cairn.cli._appliance import APPLIANCE_URL
from cairn.cli._common import add_repo
from cairn.errors import UsageError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the appliance: HTTPS API, scheduler and jobs",
                       description="The first start makes a self-signed certificate (agents "
                                   "pin it) and an admin token in REPO/admin-token.")
    add_repo(p)
    p.add_argument("--listen", metavar="HOST:PORT",
                   help="address to serve on (default from the config, else 127.0.0.1:8443)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help=f"TOML config (default {appliance_config.DEFAULT_PATH} if present)")
    p.add_argument("--recover-from", metavar="s3://BUCKET/PREFIX",
                   help="first rebuild the appliance in an empty --repo from the state its "
                        "offsite bucket holds (with --key-file: the repository's key)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = appliance_config.load(args.config)
    if args.listen:
        config = dataclasses.replace(config, listen=args.listen)
    repo = args.repo or config.repo
    if not repo:
        raise UsageError("no repository given: pass --repo PATH, set CAIRN_REPO, or set repo "
                         "in the config file")
    if args.recover_from:
        from cairn.appliance.recovery import recover

        pulled = recover(Path(repo), args.recover_from, args.endpoint,
                         Path(args.key_file) if args.key_file else None)
        print(f"appliance recovered from {args.recover_from} into {repo}: {pulled} point(s) "
              "pulled; agents keep their tokens and certificate, the admin token is the old one",
              flush=True)
    from cairn.appliance.server import serve  # FastAPI and uvicorn: only for the server itself

    remember_address(Path(repo), config.listen)
    return serve(Path(repo), config)


def remember_address(repo: Path, listen: str) -> None:
    """Write where this appliance serves to ``REPO/appliance.url``, so the admin commands on
    this host find it without ``--appliance`` (a wildcard address is reached on loopback)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    url = f"https://{f'[{host}]' if ':' in host else host}:{port}\n"
    if repo.is_dir():
        tmp = repo / ".appliance.url.tmp"
        tmp.write_text(url)
        tmp.rename(repo / APPLIANCE_URL)
