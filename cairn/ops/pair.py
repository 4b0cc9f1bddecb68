"""Pairing a protected machine with an appliance: trade a one-time token for an agent token.

The appliance's certificate is pinned: checked against ``fingerprint`` when one is given,
else the certificate seen now is trusted (and the caller should say so). The agent token,
the pinned certificate and the appliance's address go into the agent's config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cairn.agent import config as agent_config
from cairn.agent.client import ApplianceClient, fetch_certificate


@dataclass(frozen=True)
class PairRequest:
    appliance: str
    token: str
    fingerprint: str | None = None
    """expected ``sha256:...`` of the appliance certificate; None trusts the one seen now"""
    config: Path | None = None
    state_dir: str | None = None


@dataclass(frozen=True)
class Paired:
    machine: str
    appliance: str
    fingerprint: str
    config: Path
    trusted_on_first_use: bool


def pair(request: PairRequest) -> Paired:
    config = agent_config.load(request.config)
    if request.state_dir:
        config.state_dir = request.state_dir
    pem, fingerprint = fetch_certificate(request.appliance, request.fingerprint)
    with ApplianceClient(request.appliance, None, fingerprint, pem) as client:
        answer = client.json("POST", "/api/v1/pair", json={"token": request.token})
    state = Path(config.state_dir)
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    (state / "appliance.pem").write_text(pem)
    config.appliance = request.appliance.rstrip("/")
    config.machine = answer["machine"]
    config.token = answer["token"]
    config.fingerprint = fingerprint
    config.certificate = str(state / "appliance.pem")
    agent_config.save(config)
    return Paired(config.machine, config.appliance, fingerprint, Path(config.path),
                  request.fingerprint is None)
