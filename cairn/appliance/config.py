"""The appliance's settings, from ``/etc/cairn/appliance.toml`` (or ``--config``).

Every key is optional; command-line flags win over the file. The scheduler settings exist
so tests and benchmarks can compress time (a 1 s minimum interval, a 0.2 s tick); production
keeps the defaults, which refuse schedules tighter than five minutes. ``data_verify_window``
is the nightly window (local time) in which `--verify-data` reads its slice. ``[alerts]`` sets how
often conditions are checked, the first retry delay of a failing channel, when a silent agent
is worth an alert, and the free-space floor of the repository's file system. ``[uploads]
max_bodies`` caps the upload bodies read at once across all machines (`senders`).
``[rollback] image_dirs`` lists the folders whose image files a REST rollback may write
(`cairn.restore.rollback_targets`); none by default, so image files are refused there.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from cairn.appliance.window import parse_window
from cairn.errors import UsageError

DEFAULT_PATH = Path("/etc/cairn/appliance.toml")


@dataclass(frozen=True)
class ApplianceConfig:
    repo: str | None = None
    listen: str = "127.0.0.1:8443"
    tick_seconds: float = 10.0
    min_interval_seconds: float = 300.0
    offline_after_seconds: float = 120.0
    job_lease_seconds: float = 600.0
    log_level: str = "INFO"
    alert_tick_seconds: float = 15.0
    alert_retry_seconds: float = 30.0
    agent_silent_seconds: float = 900.0
    disk_free_percent: float = 10.0
    screenshot_timeout_seconds: float = 180.0
    data_verify_window: str = "01:00-05:00"
    upload_bodies: int = 16
    repack_seconds: float = 3600.0
    """How often the repository is repacked (`appliance.repacker`)."""
    rollback_image_dirs: tuple[str, ...] = ()


# [alerts] key -> ApplianceConfig field
_ALERT_KEYS = {"tick_seconds": "alert_tick_seconds", "retry_seconds": "alert_retry_seconds",
               "agent_silent_seconds": "agent_silent_seconds",
               "disk_free_percent": "disk_free_percent"}


def _number(table: dict[str, object], key: str, default: float, where: Path,
            section: str = "scheduler") -> float:
    value = table.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise UsageError(f"{where}: {section}.{key} must be a positive number, not {value!r}")
    return float(value)


def _count(table: dict[str, object], key: str, default: int, where: Path,
           section: str) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UsageError(f"{where}: {section}.{key} must be a positive whole number, "
                         f"not {value!r}")
    return value


def _window(table: dict[str, object], key: str, default: str, where: Path) -> str:
    value = table.get(key, default)
    if not isinstance(value, str):
        raise UsageError(f"{where}: scheduler.{key} must be a string like \"01:00-05:00\"")
    try:
        parse_window(value)
    except UsageError as exc:
        raise UsageError(f"{where}: scheduler.{key}: {exc}") from None
    return value


def _folders(table: dict[str, object], key: str, where: Path, section: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.startswith("/")
                                              for v in value):
        raise UsageError(f"{where}: {section}.{key} must be a list of absolute paths, "
                         f"not {value!r}")
    return tuple(value)


def _table(raw: dict[str, object], name: str, where: Path) -> dict[str, object]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise UsageError(f"{where}: [{name}] must be a table")
    return table


def load(path: Path | None) -> ApplianceConfig:
    """The config at ``path``; the default path may be absent, an explicit one may not."""
    where = path or DEFAULT_PATH
    try:
        raw = tomllib.loads(where.read_text())
    except FileNotFoundError:
        if path is None:
            return ApplianceConfig()
        raise UsageError(f"config file {where} does not exist: give an existing file "
                         "(see examples/appliance.toml)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"config file {where} is not valid TOML: {exc}") from None
    sched = _table(raw, "scheduler", where)
    alerts = _table(raw, "alerts", where)
    uploads = _table(raw, "uploads", where)
    rollback = _table(raw, "rollback", where)
    d = ApplianceConfig()
    return ApplianceConfig(
        repo=str(raw["repo"]) if "repo" in raw else None,
        listen=str(raw.get("listen", d.listen)),
        tick_seconds=_number(sched, "tick_seconds", d.tick_seconds, where),
        min_interval_seconds=_number(sched, "min_interval_seconds", d.min_interval_seconds,
                                     where),
        offline_after_seconds=_number(sched, "offline_after_seconds", d.offline_after_seconds,
                                      where),
        job_lease_seconds=_number(sched, "job_lease_seconds", d.job_lease_seconds, where),
        screenshot_timeout_seconds=_number(sched, "screenshot_timeout_seconds",
                                           d.screenshot_timeout_seconds, where),
        data_verify_window=_window(sched, "data_verify_window", d.data_verify_window, where),
        repack_seconds=_number(sched, "repack_seconds", d.repack_seconds, where),
        log_level=str(raw.get("log_level", d.log_level)).upper(),
        upload_bodies=_count(uploads, "max_bodies", d.upload_bodies, where, "uploads"),
        rollback_image_dirs=_folders(rollback, "image_dirs", where, "rollback"),
        **{field: _number(alerts, key, getattr(d, field), where, "alerts")
           for key, field in _ALERT_KEYS.items()},
    )
