"""Alerts: a person is told when something needs them, once per condition, and when it clears.

Anything that finds a problem calls :func:`raise_alert` with the repository whose appliance
should tell someone, and :func:`resolve_alert` when the problem is gone. Both only write to
``<repo>/appliance.db`` (cheap, safe from any process or thread); the appliance's dispatcher
delivers what they record by webhook and e-mail, retrying a failing channel with backoff.
So a CLI command run on the appliance host, a scheduler thread and an API handler all raise
alerts the same way, and nothing waits on a slow mail server.

``kind`` names the condition (:data:`KINDS` lists the appliance's own; others may add
theirs, e.g. ``"ransomware"``); ``machine`` and ``subject`` tell two conditions of one kind
apart (a point id, a chunk, a volume).
"""

from __future__ import annotations

from pathlib import Path

from cairn.alerts.store import Alert, AlertStore

__all__ = ["KINDS", "Alert", "AlertStore", "raise_alert", "resolve_alert"]

# The conditions the appliance watches or reports itself, with their severity.
KINDS = {
    "job_failed": "critical",
    "no_recent_point": "critical",
    "agent_silent": "warning",
    "screenshot_failed": "critical",
    "offsite_behind": "warning",
    "damage": "critical",
    "disk_low": "critical",
    "test": "info",
}


def _db(repo: Path) -> Path:
    return Path(repo) / "appliance.db"


def raise_alert(repo: Path, kind: str, message: str, machine: str = "", subject: str = "",
                severity: str | None = None) -> Alert:
    """Open (or refresh) the condition ``(kind, machine, subject)`` of ``repo``'s appliance.

    ``message`` is one line for a person: what is wrong and what to do. ``severity`` is
    ``info``, ``warning`` or ``critical`` (default: the kind's, else ``warning``).
    """
    store = AlertStore(_db(repo))
    try:
        alert, _ = store.open(kind, message, machine, subject,
                              severity or KINDS.get(kind, "warning"))
        return alert
    finally:
        store.close()


def resolve_alert(repo: Path, kind: str, machine: str = "", subject: str = "") -> Alert | None:
    """Clear the condition if it is open (a resolved message goes out); None if it was not."""
    store = AlertStore(_db(repo))
    try:
        return store.resolve(kind, machine, subject)
    finally:
        store.close()
