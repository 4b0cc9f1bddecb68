"""The verifier thread: boots due points one at a time and reads their screens.

At most one verification runs at a time (each boots a VM: two would slow each other and
the backups), in its own thread, so a backup never waits on one. For each machine with a
screenshot policy the point due is its boot volume's (the first volume by name) newest
point, when it is newer than the policy and not yet verified (``each``), or when no point
of the volume was verified within the last day or week (``daily``, ``weekly``). The
verdict, the screenshot and the OCR text are kept with the point (`virt.boot`); a verdict
other than booted raises a ``screenshot_failed`` alert, and the next good one resolves it.
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
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository
from cairn.virt.boot import screenshot_verify


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
            point = self.due(policy, now)
            if point is not None:
                self.verify(policy, point)
                done += 1
        if not self.stopping:
            self.data.run_due(now)
        return done

    def due(self, policy: VerificationPolicy, now: float) -> RecoveryPoint | None:
        if policy.screenshot == "off":
            return None
        volumes = self.state.volumes(policy.machine_id)
        if not volumes:
            return None
        repo = Repository.open(self.repo)
        try:
            vol = repo.catalog.volume(store_volume(policy.machine, volumes[0][0]))
            newest = repo.catalog.latest(vol.id) if vol else None
            if newest is None or newest.created < policy.since:
                return None
            checks = repo.catalog.verifications()
            if newest.id in checks:
                return None
            if policy.screenshot == "each":
                return newest
            ids = {p.id for p in repo.catalog.points(newest.volume_id)}
            recent = [v for v in checks.values()
                      if v.point_id in ids and now - v.at < EVERY[policy.screenshot]]
            return None if recent else newest
        finally:
            repo.close()

    def verify(self, policy: VerificationPolicy, point: RecoveryPoint) -> None:
        repo = Repository.open(self.repo)
        try:
            _, record = screenshot_verify(repo, point, policy.expect_text, self.timeout)
        finally:
            repo.close()
        logs.event("verification.done", machine=policy.machine, point=point.id,
                   status=record.status, reason=record.reason, seconds=record.seconds)
        if record.status == "booted":
            resolve_alert(self.repo, "screenshot_failed", policy.machine, point.volume)
            return
        raise_alert(self.repo, "screenshot_failed",
                    f"point {point.id} of {policy.machine} did not boot: {record.status}, "
                    f"{record.reason}; see its screenshot {record.screenshot} and `cairn "
                    f"screenshot-verify {point.id}`", policy.machine, point.volume)
