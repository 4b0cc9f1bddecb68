"""The alert loop: checks the appliance's conditions, then delivers what is owed.

Each pass computes which *watched* conditions hold now (a machine's last job failed, no new
point for two of its intervals, an agent silent too long, the repository's file system
nearly full, offsite replication behind) and reconciles them with the alert store: a new
one opens an alert, one that stopped holding is resolved. Conditions raised by events
(a failed screenshot, damage found by verification, ...) come in through
:func:`cairn.alerts.raise_alert` and are only delivered here. Everything runs in one thread
so a slow mail server delays alerts, never a backup.
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from croniter import croniter

from cairn import logs
from cairn.alerts import KINDS, AlertStore
from cairn.alerts.dispatch import Dispatcher
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.offsite import OffsiteTable
from cairn.appliance.state import Machine, Schedule, State
from cairn.appliance.uploads import store_volume
from cairn.store.repository import Repository


@dataclass(frozen=True)
class Condition:
    kind: str
    machine: str
    message: str
    subject: str = ""


# Kinds this loop owns: an open alert of one of them that no check reports is resolved.
WATCHED = ("job_failed", "no_recent_point", "agent_silent", "disk_low", "offsite_behind")


def interval(schedule: Schedule, now: float) -> float:
    """Seconds between two of the schedule's slots."""
    if schedule.every:
        return schedule.every
    it = croniter(schedule.cron, now)
    first = float(it.get_next(float))
    return float(it.get_next(float)) - first


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Checks:
    """The watched conditions, each a small function of the appliance's state and ``now``."""

    def __init__(self, repo: Path, state: State, config: ApplianceConfig) -> None:
        self.repo = repo
        self.state = state
        self.config = config
        self.offsite = OffsiteTable(state)

    def all(self, now: float) -> list[Condition]:
        found = self.disk(now) + self.offsite_behind(now)
        machines = self.state.machines()
        newest = self._newest_points(machines)
        for m in machines:
            found += self.job_failed(m) + self.agent_silent(m, now)
            found += self.no_recent_point(m, newest.get(m.id), now)
        return found

    def job_failed(self, m: Machine) -> list[Condition]:
        job = self.state.last_finished_job(m.id)
        if job is None or job.state != "failed":
            return []
        return [Condition("job_failed", m.name,
                          f"backup job {job.id} of {m.name} failed: {job.error}; "
                          "see `cairn jobs` (the alert clears with the next good backup)")]

    def agent_silent(self, m: Machine, now: float) -> list[Condition]:
        if not m.paired or m.last_seen is None:
            return []
        silent = now - m.last_seen
        if silent <= self.config.agent_silent_seconds:
            return []
        return [Condition("agent_silent", m.name,
                          f"the agent of {m.name} has not been seen for {_ago(silent)}: "
                          "check the machine and `systemctl status cairn-agent` on it")]

    def no_recent_point(self, m: Machine, newest: float | None, now: float) -> list[Condition]:
        schedule = self.state.schedule(m.id)
        if schedule is None:
            return []
        since = newest if newest is not None else (m.paired or m.created)
        every = interval(schedule, now)
        if now - since <= 2 * every:
            return []
        last = f"its newest point is {_ago(now - since)} old" if newest else "it has no point"
        return [Condition("no_recent_point", m.name,
                          f"{m.name} should be backed up every {_ago(every)} but {last}: "
                          "see `cairn jobs` for why")]

    def offsite_behind(self, now: float) -> list[Condition]:
        found = []
        for p in self.offsite.policies():
            since = p.last_ok or p.created
            if now - since <= 2 * p.every:
                continue
            why = f": the last run failed: {p.last_error}" if p.last_error else ""
            last = f"last replicated {_ago(now - since)} ago" if p.last_ok else "never replicated"
            found.append(Condition("offsite_behind", p.machine,
                                   f"offsite copy of {p.machine} to {p.target} is behind "
                                   f"({last}, every {_ago(p.every)} wanted){why}"))
        return found

    def disk(self, now: float) -> list[Condition]:
        st = os.statvfs(self.repo)
        free = 100.0 * st.f_bavail / st.f_blocks if st.f_blocks else 100.0
        if free >= self.config.disk_free_percent:
            return []
        return [Condition("disk_low", "",
                          f"the file system of {self.repo} has {free:.1f}% free (under "
                          f"{self.config.disk_free_percent:g}%): prune old points or add "
                          "space before backups fail", subject=str(self.repo))]

    def _newest_points(self, machines: list[Machine]) -> dict[int, float]:
        newest: dict[int, float] = {}
        with Repository.open(self.repo) as repo:
            for m in machines:
                for volume, _ in self.state.volumes(m.id):
                    vol = repo.catalog.volume(store_volume(m.name, volume))
                    latest = repo.catalog.latest(vol.id) if vol else None
                    if latest is not None:
                        newest[m.id] = max(newest.get(m.id, 0.0), latest.created)
        return newest


def reconcile(store: AlertStore, found: list[Condition], kinds: tuple[str, ...] = WATCHED,
              now: float | None = None) -> None:
    """Open what holds, resolve open alerts of ``kinds`` that no longer hold."""
    holding = set()
    for c in found:
        store.open(c.kind, c.message, c.machine, c.subject, KINDS[c.kind], now)
        holding.add((c.kind, c.machine, c.subject))
    for alert in store.alerts():
        if alert.kind in kinds and (alert.kind, alert.machine, alert.subject) not in holding:
            store.resolve(alert.kind, alert.machine, alert.subject, now)


class AlertLoop:
    """The appliance's alert thread: checks, then delivery, every ``alert_tick_seconds``."""

    def __init__(self, repo: Path, state: State, config: ApplianceConfig) -> None:
        self.store = AlertStore(repo / "appliance.db")
        self.checks = Checks(repo, state, config)
        self.dispatcher = Dispatcher(self.store, config.alert_retry_seconds,
                                     ssl.create_default_context())
        self.tick_seconds = config.alert_tick_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="alerts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.store.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.run_once(time.time())
            except Exception:
                logs.log.exception("alert pass failed")

    def run_once(self, now: float) -> None:
        reconcile(self.store, self.checks.all(now))
        self.dispatcher.run_once(time.time())  # what this pass opened is due already
