"""What the dashboard and a machine's page show, read from the appliance state and catalog.

A machine's points are the points of its store volumes (``MACHINE.VOLUME``, see
`cairn.appliance.uploads.store_volume`), here and, as of its last offsite run, in its cloud
repository (`cairn.appliance.offsite_copies`: the bucket is never opened to draw a page).
Reads are batched so a page costs a handful of queries however many machines or points
there are: totals per volume come in one query, verifications in one, offsite counts in
one, and one ``latest`` lookup per volume.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from cairn.alerts import Alert, AlertStore
from cairn.appliance.offsite import OffsitePolicy, OffsiteTable
from cairn.appliance.offsite_copies import OffsiteCopies, OffsitePoint
from cairn.appliance.state import Machine
from cairn.errors import UnknownPoint
from cairn.store import marks
from cairn.store.catalog import RecoveryPoint, Verification
from cairn.store.repository import Repository
from cairn.web.pages import Console, Refused


@dataclass(frozen=True)
class MachineSummary:
    """One dashboard row."""

    name: str
    status: str
    detail: str
    last_point: RecoveryPoint | None
    verification: Verification | None
    """The machine's most recent boot check, of whichever of its points."""
    next_run: float | None
    points: int
    stored_local: int
    offsite: OffsitePolicy | None
    """Where the machine's points are copied offsite, and how the last copy went."""
    offsite_points: int
    """How many points its cloud repository held after the last run."""

    @property
    def cloud_stored(self) -> int | None:
        """What the machine's cloud repository stores (shared by every machine sending
        there), as of the last run; None before one."""
        return _cloud_stored(self.offsite) if self.offsite else None


def _cloud_stored(policy: OffsitePolicy) -> int | None:
    report = json.loads(policy.last_report) if policy.last_report else {}
    stored = report.get("cloud_stored_bytes")
    return int(stored) if stored is not None else None


def offsite_stored(policies: list[OffsitePolicy]) -> int:
    """What the clouds store in all: each bucket once (machines may share one), by its
    newest report."""
    newest: dict[tuple[str, str | None], OffsitePolicy] = {}
    for p in sorted(policies, key=lambda p: p.last_run or 0):
        if _cloud_stored(p) is not None:
            newest[(p.target, p.endpoint)] = p
    return sum(_cloud_stored(p) or 0 for p in newest.values())


@dataclass(frozen=True)
class PointRow:
    """A timeline row: a point here, in the cloud, or both (the same id)."""

    id: str
    volume: str
    created: float
    size: int
    bytes_stored: int
    verification: Verification | None
    local: bool
    offsite: bool
    flags: tuple[str, ...] = ()
    """why detection found the point suspicious (empty: it did not)"""
    locked_until: float | None = None


def repository(console: Console) -> Repository:
    """The console's repository, open: use it in a ``with`` block, which closes it."""
    return Repository.open(console.repo_path)


def machine_volumes(machine: str, names: Any) -> list[str]:
    """The store volumes of ``machine`` among ``names``."""
    prefix = machine + "."
    return sorted(n for n in names if n.startswith(prefix))


def _status(console: Console, machine: Machine, last: RecoveryPoint | None) -> tuple[str, str]:
    """(status, detail): running, failed, offline, never (backed up) or ok."""
    jobs = console.state.jobs(machine_id=machine.id, limit=1)
    job = jobs[-1] if jobs else None
    if job is not None and job.active:
        return "running", f"job {job.id} {job.state}"
    if job is not None and job.state in ("failed", "missed"):
        return "failed", job.error or f"job {job.id} {job.state}"
    if last is None:
        return "never", "no backup yet"
    seen = machine.last_seen
    if machine.paired and (not seen or time.time() - seen > console.config.offline_after_seconds):
        return "offline", "the agent has not called in"
    return "ok", "protected"


def _newest(items: Any, key: str) -> Any:
    return max((i for i in items if i is not None), key=lambda i: getattr(i, key), default=None)


def summaries(console: Console, machines: list[Machine] | None = None) -> list[MachineSummary]:
    """Dashboard rows of ``machines`` (default: every machine)."""
    machines = console.state.machines() if machines is None else machines
    schedules = {s.machine_id: s for s in console.state.schedules()}
    offsite = {p.machine_id: p for p in OffsiteTable(console.state).policies()}
    copies = OffsiteCopies(console.state).counts()
    with repository(console) as repo:
        totals = repo.catalog.volume_totals()
        checks = repo.catalog.last_verifications()
        rows = []
        for machine in machines:
            names = machine_volumes(machine.name, totals)
            latest = _newest((repo.catalog.latest(v.id) for v in
                              filter(None, map(repo.catalog.volume, names))), "created")
            status, detail = _status(console, machine, latest)
            schedule = schedules.get(machine.id)
            rows.append(MachineSummary(
                machine.name, status, detail, latest,
                _newest((checks.get(n) for n in names), "at"),
                schedule.next_run if schedule else None,
                sum(totals[n][0] for n in names), sum(totals[n][1] for n in names),
                offsite.get(machine.id), copies.get(machine.id, 0)))
    return rows


def open_alerts(console: Console) -> list[Alert]:
    """The appliance's open alerts, most severe first."""
    store = AlertStore(console.repo_path / "appliance.db")
    try:
        alerts = store.alerts()
    finally:
        store.close()
    rank = {"critical": 0, "warning": 1}
    return sorted(alerts, key=lambda a: (rank.get(a.severity, 2), -a.last_seen))


def find_machine(console: Console, name: str) -> Machine:
    machine = console.state.machine(name)
    if machine is None:
        raise Refused(404, f"no machine {name!r}: the dashboard lists the machines")
    return machine


def timeline(repo: Repository, machine: str, offsite: list[OffsitePoint]) -> list[PointRow]:
    """The machine's points here and ``offsite``, newest first, each with its last
    verification; a point in both places is one row. Deleted points held for the deletion
    window are left out here, as every listing does."""
    verifications = repo.catalog.verifications()
    marked = marks.all_marks(repo)
    held = {pid for pid, m in marked.items() if m.deleted_at is not None}
    points: list[RecoveryPoint] = []
    for volume in repo.catalog.volumes():
        if volume.name.startswith(machine + "."):
            points.extend(p for p in repo.catalog.points(volume.id) if p.id not in held)
    remote = {p.id for p in offsite}
    now = time.time()
    rows = [PointRow(p.id, p.volume, p.created, p.size, p.bytes_stored,
                     verifications.get(p.id), True, p.id in remote,
                     marked[p.id].flags if p.id in marked else (),
                     marked[p.id].locked_until if p.id in marked and marked[p.id].locked(now)
                     else None) for p in points]
    here = {p.id for p in points}
    rows += [PointRow(p.id, p.volume, p.created, p.size, p.bytes_stored, None, False, True)
             for p in offsite if p.id not in here]
    rows.sort(key=lambda r: r.created, reverse=True)
    return rows


def find_point(repo: Repository, point_id: str) -> RecoveryPoint:
    """The point with exactly this id: console links carry whole ids."""
    point = repo.catalog.point(point_id)
    if point is None:
        raise UnknownPoint(point_id)
    return point


def machine_of(point: RecoveryPoint) -> str | None:
    name, dot, _ = point.volume.partition(".")
    return name if dot else None
