"""Sending one alert message: a webhook POST or an e-mail through SMTP.

The webhook receives one JSON document per message::

    {"id": 7, "kind": "job_failed", "machine": "web01", "subject": "",
     "severity": "critical", "message": "...", "first_seen": "2026-11-30T05:40:00Z",
     "resolved": null}                 # the resolution's time once the condition clears

and must answer 2xx. E-mail goes to one address, with STARTTLS (certificate checked against
the system's CAs) and login when asked. Any failure is a :class:`ChannelError` carrying one
line for `cairn alerts`; the dispatcher decides when to try again.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx

from cairn.alerts.settings import Settings
from cairn.alerts.store import Alert
from cairn.errors import CairnError

TIMEOUT = 10.0


class ChannelError(CairnError):
    """A channel did not take a message; trying again later may help."""

    retryable = True


def iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def payload(alert: Alert) -> dict[str, Any]:
    return {"id": alert.id, "kind": alert.kind, "machine": alert.machine or None,
            "subject": alert.subject or None, "severity": alert.severity,
            "message": alert.message, "first_seen": iso(alert.first_seen),
            "resolved": iso(alert.resolved)}


def send_webhook(url: str, alert: Alert) -> None:
    try:
        answer = httpx.post(url, json=payload(alert), timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise ChannelError(f"webhook {url}: {exc or type(exc).__name__}") from None
    if not 200 <= answer.status_code < 300:
        raise ChannelError(f"webhook {url} answered HTTP {answer.status_code}")


def _email(settings: Settings, alert: Alert) -> EmailMessage:
    state = "RESOLVED" if alert.resolved else alert.severity.upper()
    about = " ".join(p for p in (alert.kind, alert.machine, alert.subject) if p)
    msg = EmailMessage()
    msg["Subject"] = f"[cairn] {state} {about}"
    msg["From"] = settings.sender or f"cairn@{socket.getfqdn()}"
    msg["To"] = settings.email
    lines = [alert.message, "", f"kind: {alert.kind}", f"severity: {alert.severity}",
             f"machine: {alert.machine or '-'}", f"first seen: {iso(alert.first_seen)}",
             f"resolved: {iso(alert.resolved) or 'not yet'}"]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def send_email(settings: Settings, alert: Alert, context: ssl.SSLContext | None = None) -> None:
    """Send by SMTP; ``context`` checks the server's STARTTLS certificate (system CAs)."""
    host, port = settings.smtp_address
    try:
        with smtplib.SMTP(host, port, timeout=TIMEOUT) as smtp:
            if settings.starttls:
                smtp.starttls(context=context or ssl.create_default_context())
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            smtp.send_message(_email(settings, alert))
    except (OSError, smtplib.SMTPException) as exc:
        raise ChannelError(f"SMTP {host}:{port}: {exc or type(exc).__name__}") from None


def send(channel: str, settings: Settings, alert: Alert,
         context: ssl.SSLContext | None = None) -> None:
    if channel == "webhook":
        assert settings.webhook
        send_webhook(settings.webhook, alert)
    else:
        send_email(settings, alert, context)


def probe(settings: Settings) -> list[str]:
    """Warnings for servers that cannot be reached now (a TCP connect; nothing is sent)."""
    targets = []
    if settings.webhook:
        url = urlsplit(settings.webhook)
        default = 443 if url.scheme == "https" else 80
        targets.append(("webhook", url.hostname or "", url.port or default))
    if settings.smtp:
        targets.append(("SMTP server", *settings.smtp_address))
    warnings = []
    for what, host, port in targets:
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError as exc:
            warnings.append(f"{what} {host}:{port} cannot be reached now "
                            f"({exc.strerror or exc}); the setting is kept and alerts are "
                            "retried until it answers")
    return warnings
