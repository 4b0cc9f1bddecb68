"""The offsite thread: runs each machine's due replication, one at a time, beside backups.

Backups never wait on it (it holds only the cloud's shared lock and reads the local store);
machines are replicated one after the other so two replications never split the uplink.
A run starts only inside its policy's window and starts no point after the window closes
(the rest goes at the next run; a forced "run now" ignores the window). Each run
records the cloud's points of the machine (`offsite_copies`, shown by the console) and ends
by writing the appliance's own state to the bucket (`state_backup`), so the appliance
can be rebuilt from the bucket. Failures are recorded on the policy; an offsite that falls
behind raises an alert (`watch`). A point flagged as ransomware in the bucket that this
appliance did not make (a backup straight into the cloud) raises the same alert as one
made here (`ops.detect.alert_cloud_flags`).
"""

from __future__ import annotations

import time
from pathlib import Path

from cairn import logs
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.offsite import OffsitePolicy, OffsiteTable
from cairn.appliance.offsite_copies import OffsiteCopies
from cairn.appliance.state import State
from cairn.appliance.state_backup import push
from cairn.appliance.ticker import Ticker
from cairn.appliance.uploads import store_volume
from cairn.appliance.window import window_end
from cairn.errors import CairnError
from cairn.ops.detect import alert_cloud_flags
from cairn.ops.offsite import OffsiteTarget, replicate_volumes


def target_of(p: OffsitePolicy, now: float) -> OffsiteTarget:
    """A forced run ignores the window; a scheduled one starts no point after it closes."""
    until = None if p.forced else window_end(p.window, now)
    return OffsiteTarget(p.target, p.endpoint, p.send, p.retention, p.bandwidth, until,
                         p.immutable)


class OffsiteLoop(Ticker):
    name = "offsite"

    def __init__(self, repo: Path, state: State, config: ApplianceConfig) -> None:
        super().__init__(config.tick_seconds)
        self.repo = repo
        self.state = state
        self.table = OffsiteTable(state)
        self.copies = OffsiteCopies(state)

    def tick(self, now: float) -> None:
        self.run_due(now)

    def run_due(self, now: float) -> int:
        """Run every due policy once; how many ran."""
        due = self.table.due(now)
        for policy in due:
            if self.stopping:
                break
            self.run(policy)
        return len(due)

    def run(self, p: OffsitePolicy) -> None:
        started = time.time()
        volumes = [store_volume(p.machine, v) for v, _ in self.state.volumes(p.machine_id)]
        try:
            result = replicate_volumes(self.repo, volumes, target_of(p, started))
        except Exception as exc:  # recorded on the policy either way; a bug also logs a trace
            error = str(exc) if isinstance(exc, CairnError) else (
                f"internal error: {type(exc).__name__}: {exc}")
            self.table.finished(p, started, error, None)
            logs.event("offsite.failed", machine=p.machine, target=p.target, error=error)
            if not isinstance(exc, CairnError):
                logs.log.exception("offsite run failed")
            return
        self.copies.record(p.machine_id, result.copies)
        alert_cloud_flags(self.repo, result.flagged_elsewhere, p.target)
        report = result.json()
        try:
            report["state_bytes"] = push(self.repo, p.target, p.endpoint)
        except CairnError as exc:
            self.table.finished(p, started, f"points sent, but the appliance state was not: "
                                            f"{exc}", report)
            return
        self.table.finished(p, started, None, report)
        logs.event("offsite.done", machine=p.machine, target=p.target, **report)
