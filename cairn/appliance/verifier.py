"""The verifier thread: boots due points one at a time and reads their screens.

At most one verification runs at a time (each boots a VM: two would slow each other and
the backups), in its own thread, so a backup never waits on one. For each machine with a
screenshot policy the point due is its boot volume's (the first volume by name) newest
point, when it is newer than the policy and not yet verified (``each``), or when no point
of the volume was verified within the last day or week (``daily``, ``weekly``). The
machine boots with all its disks: the boot point's machine point gives the others (an
agentless backup), else each other volume's newest point, once no backup job of the
machine is running (an agent sends its volumes one after the other). The verdict, the
screenshot and the OCR text are kept with the boot point (`ops.screenshot_verify`); a
verdict other than booted raises a ``screenshot_failed`` alert, and the next good one
resolves it.
The night's data verification slice (`data_check`) runs in the same thread.
"""

from __future__ import annotations

from pathlib import Path

from cairn import logs
from cairn.alerts import raise_alert, resolve_alert
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.data_check import DataCheck
from cairn.appliance.offsite import OffsiteTable
from cairn.appliance.state import State
from cairn.appliance.ticker import Ticker
from cairn.appliance.uploads import store_volume
from cairn.appliance.verification import EVERY, VerificationPolicy, VerificationTable
from cairn.ops.screenshot_verify import screenshot_verify
from cairn.store.catalog import RecoveryPoint
from cairn.store.machine_points import MachinePoints
from cairn.store.repository import Repository


class Verifier(Ticker):
    name = "verifier"

    def __init__(self, repo: Path, state: State, config: ApplianceConfig) -> None:
        super().__init__(config.tick_seconds)
        self.repo = repo
        self.state = state
        self.table = VerificationTable(state)
        self.data = DataCheck(repo, self.table, OffsiteTable(state),
                              config.data_verify_window)
        self.timeout = config.screenshot_timeout_seconds

    def tick(self, now: float) -> None:
        self.run_due(now)

    def run_due(self, now: float) -> int:
        """Verify every point due now, one after the other, then the day's data slice;
        how many points were verified."""
        done = 0
        for policy in self.table.policies():
            if self.stopping:
                break
            disks = self.due(policy, now)
            if disks:
                self.verify(policy, disks)
                done += 1
        if not self.stopping:
            self.data.run_due(now)
        return done

    def due(self, policy: VerificationPolicy, now: float) -> list[RecoveryPoint]:
        """The points to boot together, the boot disk's first; none when nothing is due."""
        if policy.screenshot == "off" or self.state.active_job(policy.machine_id,
                                                               ("running",)):
            return []
        volumes = [store_volume(policy.machine, v) for v, _ in
                   self.state.volumes(policy.machine_id)]
        if not volumes:
            return []
        with Repository.open(self.repo) as repo:
            newest = self._newest(repo, volumes[0])
            if newest is None or newest.created < policy.since or not self._wanted(
                    repo, policy, newest, now):
                return []
            group = MachinePoints(repo.catalog).containing(newest.id)
            if group is not None:
                return [newest, *(m.point for m in group.members if m.point.id != newest.id)]
            return [newest, *filter(None, (self._newest(repo, v) for v in volumes[1:]))]

    @staticmethod
    def _newest(repo: Repository, volume: str) -> RecoveryPoint | None:
        vol = repo.catalog.volume(volume)
        return repo.catalog.latest(vol.id) if vol else None

    @staticmethod
    def _wanted(repo: Repository, policy: VerificationPolicy, newest: RecoveryPoint,
                now: float) -> bool:
        """Not yet verified, and (daily, weekly) no point of its volume checked lately."""
        checks = repo.catalog.verifications()
        if newest.id in checks:
            return False
        if policy.screenshot == "each":
            return True
        ids = {p.id for p in repo.catalog.points(newest.volume_id)}
        return not [v for v in checks.values()
                    if v.point_id in ids and now - v.at < EVERY[policy.screenshot]]

    def verify(self, policy: VerificationPolicy, disks: list[RecoveryPoint]) -> None:
        point, more = disks[0], disks[1:]
        with Repository.open(self.repo) as repo:
            record = screenshot_verify(repo, point.id, policy.expect_text, self.timeout,
                                       more=[p.id for p in more]).record
        logs.event("verification.done", machine=policy.machine, point=point.id,
                   status=record.status, reason=record.reason, seconds=record.seconds)
        if record.status == "booted":
            resolve_alert(self.repo, "screenshot_failed", policy.machine, point.volume)
            return
        raise_alert(self.repo, "screenshot_failed",
                    f"point {point.id} of {policy.machine} did not boot: {record.status}, "
                    f"{record.reason}; see its screenshot {record.screenshot} and `cairn "
                    f"screenshot-verify {point.id}`", policy.machine, point.volume)
