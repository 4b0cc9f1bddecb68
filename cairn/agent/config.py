"""The agent's config file (``/etc/cairn/agent.toml``, or ``--config``): TOML, mode 0600.

It holds the agent token, so it is written owner-only. Python reads TOML (`tomllib`) but
does not write it; the config is flat enough that `dump` below writes it exactly.

Example::

    appliance = "https://10.0.0.5:8443"
    machine = "web01"
    token = "agent_..."
    fingerprint = "sha256:..."
    certificate = "/var/lib/cairn-agent/appliance.pem"
    state_dir = "/var/lib/cairn-agent"
    poll_seconds = 10.0

    [volumes.sda]
    path = "/dev/sda"
    pre_freeze = "/usr/local/sbin/db-freeze"
    post_thaw = "/usr/local/sbin/db-thaw"
    hook_timeout = 60.0
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cairn.errors import NotPaired, UsageError

DEFAULT_PATH = Path("/etc/cairn/agent.toml")


@dataclass
class VolumeConfig:
    path: str
    pre_freeze: str | None = None
    post_thaw: str | None = None
    hook_timeout: float = 60.0


@dataclass
class AgentConfig:
    path: Path
    appliance: str | None = None
    machine: str | None = None
    token: str | None = None
    fingerprint: str | None = None
    certificate: str | None = None
    state_dir: str = "/var/lib/cairn-agent"
    poll_seconds: float = 10.0
    max_bytes_per_second: float | None = None
    volumes: dict[str, VolumeConfig] = field(default_factory=dict)

    def require_pairing(self) -> tuple[str, str, str, str]:
        if not (self.appliance and self.token and self.fingerprint and self.certificate):
            raise NotPaired(str(self.path))
        return self.appliance, self.token, self.fingerprint, self.certificate


def load(path: Path | None) -> AgentConfig:
    where = path or DEFAULT_PATH
    try:
        raw = tomllib.loads(where.read_text())
    except FileNotFoundError:
        return AgentConfig(path=where)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"agent config {where} is not valid TOML: {exc}") from None
    volumes = raw.pop("volumes", {})
    try:
        config = AgentConfig(path=where, **raw)
        config.volumes = {name: VolumeConfig(**v) for name, v in volumes.items()}
    except TypeError as exc:
        raise UsageError(f"agent config {where}: {exc}") from None
    return config


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def dump(config: AgentConfig) -> str:
    data = asdict(config)
    data.pop("path")
    volumes = data.pop("volumes")
    lines = [f"{k} = {_value(v)}" for k, v in data.items() if v is not None]
    for name, volume in volumes.items():
        lines.append(f"\n[volumes.{json.dumps(name)}]")
        lines.extend(f"{k} = {_value(v)}" for k, v in volume.items() if v is not None)
    return "\n".join(lines) + "\n"


def save(config: AgentConfig) -> None:
    config.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = config.path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(dump(config))
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(config.path)
