"""Agentless machines: VMs the appliance backs up itself, through their QEMU monitor.

Such a machine has no agent to pair; its row in ``machines`` is joined by one in
``agentless_machines`` (owned here, made on first use) naming the QMP socket on the
appliance host and, optionally, the guest agent's. `AgentlessRunner` is the in-appliance
agent for all of them: each tick it marks them seen (so the scheduler queues their slots as
for any online machine), takes their queued jobs one at a time, runs `backup_vm`, reports
the job, and applies the schedule's retention to the machine's points whole.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn import logs
from cairn.appliance import retention
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.state import State
from cairn.errors import CairnError, Locked
from cairn.ops.machine_points import prune_machine
from cairn.ops.vm_backup import VmBackupRequest, VmBackupResult, backup_vm
from cairn.sources.qmp import Monitor
from cairn.sources.vm_disks import check_qemu
from cairn.store.repository import Repository
from cairn.store.retention import Policy

SCHEMA = """
CREATE TABLE IF NOT EXISTS agentless_machines(
    machine_id INTEGER PRIMARY KEY REFERENCES machines(id) ON DELETE CASCADE,
    qmp TEXT NOT NULL,
    guest_agent TEXT)
"""


@dataclass(frozen=True)
class AgentlessMachine:
    machine_id: int
    name: str
    qmp: Path
    guest_agent: Path | None


class AgentlessMachines:
    def __init__(self, state: State) -> None:
        self.state = state
        with state.tx() as db:
            db.execute(SCHEMA)

    def add(self, name: str, qmp: Path, guest_agent: Path | None) -> AgentlessMachine:
        """Register ``name``, after checking that ``qmp`` is a QEMU monitor that answers."""
        with Monitor(qmp) as monitor:
            check_qemu(monitor)
        self.state.add_machine(name)
        machine = self.state.machine(name)
        assert machine is not None
        with self.state.tx() as db:
            db.execute("INSERT INTO agentless_machines(machine_id, qmp, guest_agent) "
                       "VALUES(?, ?, ?)", (machine.id, str(qmp),
                                           str(guest_agent) if guest_agent else None))
        return AgentlessMachine(machine.id, name, qmp, guest_agent)

    def list(self) -> list[AgentlessMachine]:
        rows = self.state.query("SELECT a.machine_id, m.name, a.qmp, a.guest_agent FROM "
                                "agentless_machines a JOIN machines m ON m.id = a.machine_id "
                                "ORDER BY m.name")
        return [AgentlessMachine(i, n, Path(q), Path(g) if g else None) for i, n, q, g in rows]


class AgentlessRunner:
    """The appliance's own agent for agentless machines (see the module docstring)."""

    def __init__(self, repo_path: Path, state: State, config: ApplianceConfig) -> None:
        self.repo_path = repo_path
        self.state = state
        self.machines = AgentlessMachines(state)
        self.tick_seconds = config.tick_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="agentless", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:
                logs.log.exception("agentless pass failed")
            if self._stop.wait(self.tick_seconds):
                return

    def run_once(self) -> None:
        for machine in self.machines.list():
            self.state.seen(machine.machine_id)
            job = self.state.take_job(machine.machine_id)
            if job is not None:
                self._run(machine, job.id)

    def _run(self, machine: AgentlessMachine, job_id: int) -> None:
        logs.event("job.started", machine=machine.name, job=job_id, agentless=True)
        request = VmBackupRequest(machine.qmp, machine.name, machine.guest_agent)
        try:
            with Repository.open(self.repo_path) as repo:
                result = backup_vm(repo, request)
        except Exception as exc:  # a job that failed is reported, never left running
            error = str(exc) if isinstance(exc, CairnError) else (
                f"internal error: {type(exc).__name__}: {exc} (see the appliance log)")
            if not isinstance(exc, CairnError):
                logs.log.exception("agentless backup of %s failed", machine.name)
            self.state.finish_job(job_id, False, error, 0, 0, [])
            logs.event("job.failed", machine=machine.name, job=job_id, error=error)
            return
        for disk in result.disks:  # the API, alerts and offsite copies see its volumes
            self.state.register_volume(machine.machine_id, disk.disk, disk.point.size)
        self.state.record_retention(
            job_id, retention.guarded(machine.name, job_id, lambda: self._retention(machine)))
        self.state.finish_job(job_id, True, None,
                              sum(d.point.bytes_read for d in result.disks),
                              sum(d.point.bytes_stored for d in result.disks),
                              [result.machine_point.id, *(d.point.id for d in result.disks)])
        logs.event("job.succeeded", machine=machine.name, job=job_id,
                   machine_point=result.machine_point.id, read=_modes(result))

    def _retention(self, machine: AgentlessMachine) -> dict[str, Any] | None:
        """The schedule's policy over the machine's points, each kept or removed whole."""
        schedule = self.state.schedule(machine.machine_id)
        if schedule is None or not schedule.retention:
            return None
        outcome: dict[str, Any] = {"deleted": [], "kept": [], "deferred": [], "error": None}
        with Repository.open(self.repo_path) as repo:
            try:
                plan = prune_machine(repo, machine.name, Policy.parse(schedule.retention))
            except Locked:
                logs.event("retention.deferred", machine=machine.name)
                outcome["deferred"].append(machine.name)
                return outcome
        outcome["deleted"] = [mp.id for mp in plan.doomed]
        outcome["kept"] = [{"id": i, "rules": r} for i, r in plan.kept.items()]
        return outcome


def _modes(result: VmBackupResult) -> str:
    """How each disk was read and why (a full read says what forced it)."""
    return "; ".join(f"{d.disk}: {d.mode} ({d.reason})" for d in result.disks)

