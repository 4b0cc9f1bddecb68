"""A machine's schedule and retention: set them (REST API and web console alike), and see
before saving which existing points a retention policy would remove.

The preview is the plan `cairn prune` would carry out (`ops.retention.plan`): the
policy's own selection, and the keep reasons (a point with a clone is always kept).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cairn import logs
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.scheduler import check_cron, first_run, parse_every
from cairn.appliance.state import Machine, State
from cairn.errors import UsageError
from cairn.ops.retention import plan
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository
from cairn.store.retention import Policy


def set_schedule(state: State, config: ApplianceConfig, machine: Machine, every: str | None,
                 cron: str | None, retention: str | None) -> None:
    """Back ``machine`` up every ``every`` (``5m``) or by ``cron``, pruning by ``retention``."""
    if (every is None) == (cron is None):
        raise UsageError("give exactly one of every (e.g. 5m) or cron (e.g. '*/15 * * * *')")
    seconds = parse_every(every, config.min_interval_seconds) if every else None
    checked = check_cron(cron, config.min_interval_seconds) if cron else None
    if retention is not None and Policy.parse(retention).empty:
        raise UsageError("retention names no rule: e.g. hourly=24,daily=14")
    state.set_schedule(machine.id, seconds, checked, retention,
                       first_run(seconds, checked, time.time()))
    logs.event("schedule.set", machine=machine.name, every=seconds, cron=checked,
               retention=retention)


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
