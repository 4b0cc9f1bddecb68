"""Backing up a running QEMU VM from the outside: every disk at one instant, only what changed.

The order is what makes a failure harmless (`cairn.sources.qemu_view` tells the QEMU side):

1. clear what a killed backup left in QEMU, and settle the bitmaps so the one named after
   the machine's last point (``cairn-<id>``) records every write since that point;
2. decide per disk: read only the bitmap's dirty extents when that bitmap exists, is
   consistent, and the volume's last point is the machine point's member; else read the
   whole disk (holes QEMU reports are skipped) and say why;
3. take the view of all disks in one transaction (guest file systems frozen around it when
   a guest agent is given), read each disk into its volume, commit the machine point;
4. release the view and hand the bitmaps over: only after the commit is the old bitmap
   dropped; on failure the new one is merged back, so the next backup sees every change.

A disk's volume is ``<machine>.<disk>``, as the appliance names an agent's volumes. If
reading a later disk fails, the volume points already committed by this backup are deleted
again, so no partial machine point stays.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cairn.errors import CairnError, SourceError
from cairn.sources.guest_agent import GuestAgent
from cairn.sources.nbd_source import NbdSource
from cairn.sources.qemu_view import (
    Freeze,
    PointInTimeView,
    ViewDisk,
    bitmap_name,
    clear_leftovers,
    settle_bitmaps,
)
from cairn.sources.qmp import Monitor
from cairn.sources.vm_disks import Disk, check_qemu, list_disks
from cairn.store.catalog import RecoveryPoint
from cairn.store.delete import delete_points
from cairn.store.ingest import Ingest
from cairn.store.locks import FileLock
from cairn.store.machine_points import MachinePoint, MachinePoints, check_machine_name
from cairn.store.repository import Repository, check_volume_name

Advance = Callable[[int], None]
ProgressFactory = Callable[[int, str], contextlib.AbstractContextManager[Advance]]


@dataclass(frozen=True)
class VmBackupRequest:
    qmp: Path
    machine: str | None = None
    guest_agent: Path | None = None


@dataclass(frozen=True)
class DiskResult:
    disk: str
    point: RecoveryPoint
    mode: str
    """``incremental`` (only the bitmap's dirty extents were read) or ``full``."""
    reason: str


@dataclass(frozen=True)
class VmBackupResult:
    machine_point: MachinePoint
    disks: list[DiskResult]
    pause_seconds: float
    seconds: float
    leftovers_cleared: bool


@dataclass
class _Plan:
    view: ViewDisk
    volume: str
    reason: str


@dataclass
class _Quiesce:
    """The guest agent's freeze and thaw. The agent is reached (and synced) before the pause,
    so one that does not answer costs no pause; any failure makes the point crash-consistent
    and the note says why."""

    path: Path | None
    notes: list[str] = field(default_factory=list)
    agent: GuestAgent | None = None
    frozen: int | None = None

    def connect(self) -> None:
        if self.path is None:
            return
        try:
            self.agent = GuestAgent(self.path)
        except SourceError as exc:
            self.notes.append(f"not frozen: {exc}")

    def freeze(self) -> int:
        if self.agent is None:
            return 0
        try:
            self.frozen = self.agent.freeze()
        except SourceError as exc:
            self.notes.append(f"not frozen: {exc}")
        return self.frozen or 0

    def thaw(self) -> None:
        """Runs whenever freeze was tried, even if it failed: a half-done freeze thaws too."""
        if self.agent is None:
            return
        try:
            self.agent.thaw()
        except SourceError as exc:
            self.notes.append(f"thaw failed: {exc}")
            self.frozen = None
        finally:
            self.agent.close()
            self.agent = None

    def close(self) -> None:
        if self.agent is not None:
            self.agent.close()
            self.agent = None

    @property
    def consistency(self) -> str:
        return "application" if self.frozen is not None else "crash"

    @property
    def note(self) -> str:
        if self.notes:
            return "; ".join(self.notes)
        if self.frozen is not None:
            return f"guest agent froze {self.frozen} file system(s)"
        return "no guest agent"


def default_machine(monitor: Monitor, qmp: Path) -> str:
    """QEMU's ``-name``, else the socket's file name without its extension."""
    name = (monitor.execute("query-name") or {}).get("name")
    return str(name or qmp.stem)


def _plan_disk(repo: Repository, machine: str, index: int, disk: Disk,
               last: MachinePoint | None, why_not: dict[str, str]) -> _Plan:
    volume = check_volume_name(f"{machine}.{disk.name}")
    if last is None:
        return _Plan(ViewDisk(disk, index, None), volume, "first backup of this machine")
    base = bitmap_name(last.id)
    member = next((m.point for m in last.members if m.disk == disk.name), None)
    known = repo.catalog.volume(volume)
    latest = repo.catalog.latest(known.id) if known else None
    if disk.name in why_not:
        reason = why_not[disk.name]
    elif base not in disk.bitmaps:
        reason = (f"no dirty bitmap since machine point {last.id} (the VM restarted and "
                  "its image keeps no bitmaps, or QEMU stopped before saving it; or the "
                  "disk is new)")
    elif member is None or latest is None or latest.id != member.id:
        reason = f"the last point of {volume} is not the one of machine point {last.id}"
    elif member.size != disk.size:
        reason = "the disk was resized"
    else:
        return _Plan(ViewDisk(disk, index, base), volume, f"changes since {last.id}")
    return _Plan(ViewDisk(disk, index, None), volume, reason)


def _inconsistent(monitor: Monitor, keep: str | None) -> dict[str, str]:
    """Disks whose bitmap QEMU marks inconsistent (the VM stopped uncleanly)."""
    if keep is None:
        return {}
    return {d.name: "QEMU reports the dirty bitmap inconsistent (the VM stopped uncleanly)"
            for d in list_disks(monitor) if keep in d.bitmaps and d.bitmaps[keep].inconsistent}


def _read(repo: Repository, view: PointInTimeView, plans: list[_Plan],
          progress: ProgressFactory | None) -> list[DiskResult]:
    results: list[DiskResult] = []
    try:
        for plan in plans:
            source = NbdSource(view.socket, plan.view.disk.name, plan.view.base)
            try:
                ranges = source.dirty_ranges()
                total = sum(n for _, n in ranges) if ranges is not None else source.size
                with (progress(total, f"backup {plan.volume}") if progress
                      else contextlib.nullcontext(None)) as advance:
                    point = Ingest(repo, plan.volume, source, progress=advance).run(ranges)
            finally:
                source.close()
            mode = "incremental" if plan.view.base else "full"
            results.append(DiskResult(plan.view.disk.name, point, mode, plan.reason))
    except BaseException:
        with contextlib.suppress(CairnError):
            delete_points(repo, [r.point for r in results])
        raise
    return results


@dataclass
class _Backup:
    """One backup's fixed inputs, once the machine and its last point are known."""

    repo: Repository
    monitor: Monitor
    machine: str
    points: MachinePoints
    progress: ProgressFactory | None


def _prepare(b: _Backup, qmp: Path) -> tuple[list[_Plan], bool]:
    """Clear leftovers, settle the bitmaps, and decide how to read each disk."""
    cleared = clear_leftovers(b.monitor)
    last = b.points.latest(b.machine)
    keep = bitmap_name(last.id) if last else None
    why_not = _inconsistent(b.monitor, keep)
    disks = settle_bitmaps(b.monitor, keep)
    if not disks:
        raise SourceError(f"the VM at {qmp} has no writable disk to back up")
    return [_plan_disk(b.repo, b.machine, i, d, last, why_not)
            for i, d in enumerate(disks)], cleared


def _take(b: _Backup, plans: list[_Plan], quiesce: _Quiesce
          ) -> tuple[MachinePoint, list[DiskResult], float]:
    """Take the view, read every disk, commit; the view goes and the bitmaps are handed
    over whatever happens."""
    point_id = b.repo.new_point_id()
    view = PointInTimeView(b.monitor, [p.view for p in plans], bitmap_name(point_id),
                           Freeze(quiesce.freeze, quiesce.thaw))
    view.open()
    committed = False
    try:
        results = _read(b.repo, view, plans, b.progress)
        mp = b.points.record(point_id, b.machine, time.time(), quiesce.consistency,
                             quiesce.note, [(r.disk, r.point) for r in results])
        committed = True
    finally:
        view.close(committed)
    return mp, results, view.pause_seconds


def backup_vm(repo: Repository, request: VmBackupRequest,
              progress: ProgressFactory | None = None) -> VmBackupResult:
    """One machine point of the VM behind ``request.qmp``; see the module docstring."""
    started = time.monotonic()
    with Monitor(request.qmp) as monitor:
        check_qemu(monitor)
        machine = check_machine_name(request.machine or default_machine(monitor, request.qmp))
        b = _Backup(repo, monitor, machine, MachinePoints(repo.catalog), progress)
        lock = FileLock(repo.path / "locks" / f"machine-{machine}.lock", f"machine {machine}")
        with lock.acquire():
            plans, cleared = _prepare(b, request.qmp)
            quiesce = _Quiesce(request.guest_agent)
            quiesce.connect()
            try:
                mp, results, pause = _take(b, plans, quiesce)
            finally:
                quiesce.close()
    return VmBackupResult(mp, results, round(pause, 4), round(time.monotonic() - started, 3),
                          cleared)
