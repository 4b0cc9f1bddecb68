"""Setting where alerts go, and a test message through every channel.

One implementation for `cairn alerts set` and `cairn alerts test` (through the REST API,
`routes/alerts.py`) and for the console's settings page: the settings are checked first (a
malformed one changes nothing), then kept; a server that cannot be reached now is only a
warning, because the appliance may be set up before the mail relay is.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass

from cairn import logs
from cairn.alerts.channels import ChannelError, iso, probe, send
from cairn.alerts.settings import Settings
from cairn.alerts.store import Alert, AlertStore
from cairn.errors import UsageError


@dataclass(frozen=True)
class ChannelCheck:
    channel: str
    ok: bool
    error: str | None


def set_channels(store: AlertStore, settings: Settings) -> list[str]:
    """Check and keep ``settings``; warnings for servers unreachable now."""
    settings.check()
    store.set_settings(settings.to_dict())
    warnings = probe(settings)
    logs.event("alerts.settings", webhook=settings.webhook, email=settings.email,
               smtp=settings.smtp, warnings=warnings)
    return warnings


def send_test(store: AlertStore) -> list[ChannelCheck]:
    """Send a test message through every channel now; each channel's outcome."""
    settings = Settings.from_dict(store.settings())
    channels = store.channels()
    if not channels:
        raise UsageError("no alert channel is set: `cairn alerts set --webhook URL` or "
                         "`--email ADDRESS --smtp HOST:PORT`")
    now = time.time()
    alert = Alert(0, "test", "", "", "info",
                  f"test alert from the cairn appliance at {iso(now)}: this channel works",
                  now, now, None)
    results = []
    for channel in channels:
        try:
            send(channel, settings, alert, ssl.create_default_context())
            results.append(ChannelCheck(channel, True, None))
        except ChannelError as exc:
            results.append(ChannelCheck(channel, False, str(exc)))
    return results
