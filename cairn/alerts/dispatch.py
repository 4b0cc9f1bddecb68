"""The dispatcher: delivers what the alert store owes, retrying a failing channel with backoff.

The appliance calls :meth:`Dispatcher.run_once` from its alert loop. Each pass sends every
due delivery; one that fails is tried again after ``retry_seconds``, doubling per attempt
up to an hour, and its error shows in `cairn alerts` until it goes through. An opening
retried after its condition cleared still says "open" (``resolved`` null): the resolution
has a delivery of its own.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import replace

from cairn import logs
from cairn.alerts.channels import ChannelError, send
from cairn.alerts.settings import Settings
from cairn.alerts.store import AlertStore, Delivery

MAX_BACKOFF = 3600.0


def backoff(retry_seconds: float, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failure."""
    return min(retry_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


class Dispatcher:
    def __init__(self, store: AlertStore, retry_seconds: float,
                 context: ssl.SSLContext | None = None) -> None:
        self.store = store
        self.retry_seconds = retry_seconds
        self.context = context

    def run_once(self, now: float) -> int:
        """Send every delivery due by ``now``; the number that went through."""
        settings = Settings.from_dict(self.store.settings())
        sent = 0
        for d in self.store.deliveries(due_before=now):
            sent += self._deliver(settings, d)
        return sent

    def _deliver(self, settings: Settings, d: Delivery) -> bool:
        configured = settings.webhook if d.channel == "webhook" else settings.email
        if not configured:
            self.store.failed(d, f"{d.channel} is no longer configured", now_plus(MAX_BACKOFF))
            return False
        alert = d.alert if d.event == "resolved" else replace(d.alert, resolved=None)
        try:
            send(d.channel, settings, alert, self.context)
        except ChannelError as exc:
            attempts = d.attempts + 1
            self.store.failed(d, str(exc), now_plus(backoff(self.retry_seconds, attempts)))
            logs.event("alert.delivery_failed", alert=d.alert.id, channel=d.channel,
                       attempts=attempts, error=str(exc))
            return False
        self.store.delivered(d)
        logs.event("alert.delivered", alert=d.alert.id, kind=d.alert.kind, channel=d.channel,
                   event=d.event)
        return True


def now_plus(seconds: float) -> float:
    return time.time() + seconds
