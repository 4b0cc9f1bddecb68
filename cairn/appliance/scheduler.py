"""The scheduler: turns each machine's schedule into jobs, one slot at a time.

A tick (every ``tick_seconds``) looks at the schedules whose slot has come. An online
machine with no job in flight gets a queued job; an offline machine (its agent not seen for
``offline_after_seconds``) or one still busy with the previous job gets a ``missed`` job in
the history instead, so nothing overlaps and every lost slot is visible. Slots that passed
while the appliance was down count once, not once per slot. Running jobs whose agent went
silent for ``job_lease_seconds`` are failed, so a dead agent never blocks its machine.
"""

from __future__ import annotations

import re
import time

from croniter import croniter

from cairn import logs
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.state import Machine, Schedule, State
from cairn.appliance.ticker import Ticker
from cairn.errors import UsageError
from cairn.store.retention import Policy

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_every(text: str, minimum: float) -> float:
    """``"5m"`` -> 300.0, refusing anything shorter than ``minimum`` seconds."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"interval {text!r} is not a number with a unit s, m, h or d "
                         "(e.g. 5m, 1h)")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < minimum:
        raise UsageError(f"interval {text!r} is shorter than the minimum of {minimum:g} s")
    return seconds


CRON_SAMPLE = 300
"""Firings of a cron expression looked at for its shortest gap: days of a minute-level
expression, years of a daily one; cheap (milliseconds) and enough for real schedules."""


def check_cron(expr: str, minimum: float) -> str:
    """``expr`` if valid and never firing twice within ``minimum`` seconds (the same floor
    as ``--every``), from a fixed start so the answer does not depend on today."""
    if not croniter.is_valid(expr):
        raise UsageError(f"cron expression {expr!r} is not valid: use five fields, "
                         "e.g. '*/15 * * * *'")
    fires = croniter(expr, 1_767_225_600.0)  # 2026-01-01 UTC
    last = fires.get_next(float)
    for _ in range(CRON_SAMPLE):
        nxt = fires.get_next(float)
        if nxt - last < minimum:
            raise UsageError(f"cron expression {expr!r} fires {nxt - last:g} s apart, "
                             f"under the minimum interval of {minimum:g} s "
                             "(`min_interval_seconds` in appliance.toml)")
        last = nxt
    return expr


def next_after(schedule: Schedule, now: float) -> float:
    """The first slot strictly after ``now``."""
    if schedule.cron:
        return float(croniter(schedule.cron, now).get_next(float))
    assert schedule.every
    slot = schedule.next_run
    if slot <= now:
        slot += (int((now - slot) // schedule.every) + 1) * schedule.every
    return slot


def first_run(every: float | None, cron: str | None, now: float) -> float:
    if cron:
        return float(croniter(cron, now).get_next(float))
    assert every
    return now + every


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


class Scheduler(Ticker):
    name = "scheduler"

    def __init__(self, state: State, config: ApplianceConfig) -> None:
        super().__init__(config.tick_seconds, stop_timeout=5)
        self.state = state
        self.config = config

    def tick(self, now: float) -> None:
        for job_id in self.state.fail_stale(now - self.config.job_lease_seconds):
            logs.event("job.lost", job=job_id)
        for schedule in self.state.schedules(due_before=now):
            self._slot(schedule, now)
            self.state.advance(schedule.machine_id, next_after(schedule, now))

    def _slot(self, schedule: Schedule, now: float) -> None:
        machine = self.state.machine_by_id(schedule.machine_id)
        seen = machine.last_seen or 0.0
        if now - seen > self.config.offline_after_seconds:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen)) if seen else "never"
            job = self.state.record_missed(machine.id, "schedule",
                                           f"machine offline: agent last seen {since}")
            logs.event("job.missed", machine=machine.name, job=job, why="offline")
            return
        if self.state.active_job(machine.id) is not None:
            job = self.state.record_missed(machine.id, "schedule",
                                           "previous backup still running (jobs never overlap)")
            logs.event("job.missed", machine=machine.name, job=job, why="busy")
            return
        job, _ = self.state.queue_job(machine.id, "schedule")
        logs.event("job.queued", machine=machine.name, job=job, reason="schedule")
