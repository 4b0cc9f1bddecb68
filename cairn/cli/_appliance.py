"""What the admin commands share: reaching the appliance's API with its certificate pinned.

On the appliance host the repository says everything (``--repo``: its ``admin-token`` and
``tls/cert.pem``); from elsewhere give ``CAIRN_ADMIN_TOKEN`` and the fingerprint that
`cairn serve` logs at start (``--fingerprint`` or ``CAIRN_APPLIANCE_FINGERPRINT``).
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from cairn.agent.client import ApplianceClient, fetch_certificate, fingerprint_der
from cairn.cli._common import add_json, add_repo
from cairn.errors import UsageError

DEFAULT_URL = "https://127.0.0.1:8443"
APPLIANCE_URL = "appliance.url"
"""Where `cairn serve` writes the address it serves, in its repository."""


def add_appliance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--appliance", default=os.environ.get("CAIRN_APPLIANCE"),
                        metavar="URL", help=f"appliance API (default $CAIRN_APPLIANCE, else "
                                            f"where `cairn serve` of --repo listens: "
                                            f"REPO/{APPLIANCE_URL}, else {DEFAULT_URL})")
    parser.add_argument("--fingerprint", default=os.environ.get("CAIRN_APPLIANCE_FINGERPRINT"),
                        help="expected sha256:... of the appliance certificate")
    add_repo(parser)


def admin_command(sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                  description: str) -> tuple[argparse.ArgumentParser,
                                             argparse._SubParsersAction[argparse.ArgumentParser]]:
    """An admin command of the appliance (its options and ``--json``) and its actions,
    ``cairn NAME ACTION ...``; with no action it lists."""
    p = sub.add_parser(name, help=description)
    add_appliance(p)
    add_json(p)
    return p, p.add_subparsers(dest="action", metavar="ACTION")


def machine_action(actions: argparse._SubParsersAction[argparse.ArgumentParser], name: str,
                   description: str) -> argparse.ArgumentParser:
    """An action on one machine: ``cairn COMMAND NAME MACHINE ...``."""
    action = actions.add_parser(name, help=description)
    action.add_argument("name", metavar="MACHINE")
    return action


def admin_client(args: argparse.Namespace) -> ApplianceClient:
    token = os.environ.get("CAIRN_ADMIN_TOKEN")
    repo = Path(args.repo) if args.repo else None
    if token is None and repo is not None:
        try:
            token = (repo / "admin-token").read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read {repo / 'admin-token'} ({exc.strerror}): run as "
                             "the appliance's user (`runuser -u cairn -- cairn ...`) or root "
                             "on the appliance, or set CAIRN_ADMIN_TOKEN") from None
    if not token:
        raise UsageError("no admin token: pass --repo on the appliance host, or set "
                         "CAIRN_ADMIN_TOKEN")
    pem = None
    if repo is not None and (repo / "tls" / "cert.pem").exists():
        pem = (repo / "tls" / "cert.pem").read_text()
        fingerprint = fingerprint_der(ssl.PEM_cert_to_DER_cert(pem))
        if args.fingerprint and args.fingerprint.lower() != fingerprint:
            raise UsageError(f"--fingerprint {args.fingerprint} does not match {repo}'s "
                             f"certificate {fingerprint}")
    elif args.fingerprint:
        pem, fingerprint = fetch_certificate(args.appliance or _served(repo) or DEFAULT_URL,
                                             args.fingerprint)
    else:
        raise UsageError("cannot pin the appliance certificate: pass --repo on the appliance "
                         "host, or --fingerprint sha256:... (logged by `cairn serve`)")
    url = args.appliance or _served(repo) or DEFAULT_URL
    client = ApplianceClient(url, token, fingerprint, pem)
    client.unreachable_hint = (f"check that `cairn serve` runs and listens at {url} (from "
                               f"--appliance, $CAIRN_APPLIANCE or REPO/{APPLIANCE_URL})")
    return client


def _served(repo: Path | None) -> str | None:
    """The address `cairn serve` wrote into ``repo``, if it did."""
    try:
        return (repo / APPLIANCE_URL).read_text().strip() or None if repo else None
    except OSError:
        return None


LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def pairing_url(url: str) -> str:
    """The address agents on other machines should use: ``url`` with a loopback host (how
    admin commands reach a wildcard `serve --listen 0.0.0.0`) replaced by this host's own
    address, which agents elsewhere can reach, where 127.0.0.1 would be themselves."""
    parts = urlsplit(url)
    if parts.hostname not in LOOPBACK:
        return url
    host = _own_address()
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def _own_address() -> str:
    """The address this host sends from on its default route (a UDP connect sends no
    packet), else its host name."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))      # TEST-NET-1: only picks the route
            address = probe.getsockname()[0]
        except OSError:
            address = ""
    return address if address and address not in LOOPBACK else socket.getfqdn()
