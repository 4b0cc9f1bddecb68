"""One time format in every JSON cairn gives, CLI and REST alike: Unix seconds, and beside
each an ``<field>_iso`` twin in ISO 8601 with its zone (issue 15)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

TIME_FIELDS = frozenset({"created", "deleted_at", "purge_after", "locked_until", "held_until",
                         "at", "started", "finished", "last_seen", "heartbeat", "next_run",
                         "found", "healed", "paired", "first_seen", "resolved", "next_try",
                         "last_ok", "last_run", "asked", "mtime", "legacy_held_until"})
"""Fields holding Unix times in what commands print: each gets an ``<field>_iso`` twin."""


def with_iso_times(value: Any) -> Any:
    if isinstance(value, list):
        return [with_iso_times(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        out[key] = with_iso_times(item)
        if key in TIME_FIELDS and isinstance(item, int | float) and not isinstance(item, bool):
            out[f"{key}_iso"] = iso_time(item)
    return out


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")
