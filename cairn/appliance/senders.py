"""How many upload bodies the appliance reads at once: per machine, and in all.

Each body being read holds up to a window of frame data (`cairn.appliance.intake`) and a
worker thread at times. One machine may send PER_MACHINE at once: an agent sends one, and
the second covers a retry whose first attempt is still being read. Across machines the
appliance reads at most ``total`` (``[uploads] max_bodies`` in ``appliance.toml``), so a
thousand agents starting together cost a bounded amount of memory and threads. Past
either cap the answer is 429 with ``Retry-After``, and the agent tries again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import HTTPException

from cairn.appliance import metrics
from cairn.appliance.state import Machine

PER_MACHINE = 2
RETRY_AFTER = 1  # seconds: a body of a few MiB is read in well under that


class Senders:
    """The event loop's own count of bodies being read (no lock: only the loop touches
    it)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.sending = 0
        self.by_machine: dict[int, int] = {}

    @contextmanager
    def slot(self, machine: Machine) -> Iterator[None]:
        """Hold one slot while a body of ``machine`` is read, or refuse with 429."""
        if self.by_machine.get(machine.id, 0) >= PER_MACHINE:
            raise busy(f"{machine.name} already sends {PER_MACHINE} bodies at once: send "
                       "the next when one is answered")
        if self.sending >= self.total:
            raise busy(f"the appliance already reads as many upload bodies as [uploads] "
                       f"max_bodies allows ({self.total}): try again shortly")
        self.sending += 1
        self.by_machine[machine.id] = self.by_machine.get(machine.id, 0) + 1
        metrics.add("cairn_upload_bodies_reading")
        try:
            yield
        finally:
            metrics.add("cairn_upload_bodies_reading", -1)
            self.sending -= 1
            self.by_machine[machine.id] -= 1
            if not self.by_machine[machine.id]:
                del self.by_machine[machine.id]


def busy(message: str) -> HTTPException:
    metrics.add("cairn_upload_bodies_refused_total")
    return HTTPException(429, message, headers={"Retry-After": str(RETRY_AFTER)})
