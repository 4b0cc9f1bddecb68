"""Which local points a replication sends: the cloud's own record decides, not the cache.

A point the bucket holds or once held (``removed/``: its retention deleted it) is never sent
again. With ``send`` = ``hourly`` or ``daily`` only the first point of each hour or day of a
volume goes, and a period the cloud already has a point of (held or removed) is done, so
local retention deleting that first point later never makes a second one go. A disk's point
of a machine point falls in the period of its machine point's time (``moments``), so a
backup whose disks committed on both sides of an hour sends all its disks or none.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cairn.errors import UsageError
from cairn.store.catalog import RecoveryPoint

PERIODS = {"all": None, "hourly": "%Y-%m-%d %H", "daily": "%Y-%m-%d"}


@dataclass(frozen=True)
class Known:
    """A point the cloud holds or held."""

    id: str
    volume: str
    created: float


def check_send(text: str) -> str:
    if text not in PERIODS:
        raise UsageError(f"--send {text!r}: give all, hourly (the first point of each hour) "
                         "or daily (the first of each day)")
    return text


def choose(local: Iterable[RecoveryPoint], known: Iterable[Known], send: str = "all",
           moments: Mapping[str, float] | None = None) -> list[RecoveryPoint]:
    """The points to send, in volume and creation order. ``moments``: the time that places
    a point (by id) in its period when not its own, its machine point's."""
    fmt = PERIODS[check_send(send)]
    known = list(known)
    ids = {k.id for k in known}
    at = moments or {}

    def period(volume: str, point_id: str, created: float) -> tuple[str, str]:
        return volume, time.strftime(fmt or "", time.localtime(at.get(point_id, created)))

    covered = {period(k.volume, k.id, k.created) for k in known} if fmt else set()
    chosen = []
    for p in sorted(local, key=lambda p: (p.volume, p.created, p.seq)):
        if p.id in ids:
            continue
        if fmt:
            slot = period(p.volume, p.id, p.created)
            if slot in covered:
                continue
            covered.add(slot)
        chosen.append(p)
    return chosen
