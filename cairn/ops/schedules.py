"""A retention policy's preview: before a schedule is saved (REST API and web console alike,
by `cairn.appliance.scheduler.set_schedule`), which existing points it would remove.

The preview is the plan `cairn prune` would carry out (`ops.retention.plan`): the
policy's own selection, and the keep reasons (a point with a clone is always kept).
"""

from __future__ import annotations

from dataclasses import dataclass

from cairn.errors import UsageError
from cairn.ops.retention import plan
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository
from cairn.store.retention import Policy


@dataclass(frozen=True)
class Fate:
    """One existing point under a policy: kept (with the rules that keep it) or removed."""

    point: RecoveryPoint
    kept_by: list[str]


def preview(repo: Repository, volumes: list[str], policy: Policy) -> list[Fate]:
    """What ``policy`` would do now to the points of ``volumes``, newest first."""
    if policy.empty:
        raise UsageError("retention names no rule: e.g. hourly=24,daily=14")
    fates: list[Fate] = []
    for name in volumes:
        if repo.catalog.volume(name) is None:
            continue
        planned = plan(repo, name, policy)
        fates += [Fate(p, planned.reasons.get(p.id, [])) for p in planned.points]
    fates.sort(key=lambda f: f.point.created, reverse=True)
    return fates
