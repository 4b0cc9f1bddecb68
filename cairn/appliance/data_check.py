"""Data verification by schedule: each night, read and hash-check the next 1/N of the chunks.

Runs in the verifier's thread (one heavy job at a time), once per night inside the
appliance's ``data_verify_window`` (local time, ``01:00-05:00`` by default: reading a
slice of every stored byte competes with backups and uplinks, which are quietest then), on
the local repository and on every cloud repository an offsite policy sends to, each with
its own rotation: after N nights every stored chunk has been read once (`verify.in_slice`).
A location whose slice already ran in tonight's window waits for the next night; an
appliance down all night skips that night. Damage found names the
points it hurts (`verify`) and raises a ``damage`` alert per machine and slice, which the
next clean pass over that slice resolves.
"""

from __future__ import annotations

import time
from pathlib import Path

from cairn import logs
from cairn.alerts import AlertStore, raise_alert, resolve_alert
from cairn.appliance.offsite import OffsiteTable
from cairn.appliance.verification import VerificationTable
from cairn.appliance.window import in_window, window_start
from cairn.ops.offsite import local_key
from cairn.store.repository import Repository
from cairn.store.verify import Report, verify


class DataCheck:
    def __init__(self, repo: Path, verification: VerificationTable, offsite: OffsiteTable,
                 window: str) -> None:
        self.repo = repo
        self.table = verification
        self.offsite = offsite
        self.window = window

    def locations(self) -> list[tuple[str, str | None]]:
        """The local repository, then each distinct cloud target with its endpoint."""
        clouds = {(p.target, p.endpoint) for p in self.offsite.policies()}
        return [(str(self.repo), None), *sorted(clouds, key=lambda c: (c[0], c[1] or ""))]

    def run_due(self, now: float) -> list[tuple[str, Report]]:
        """Inside the night's window, check each location not yet checked tonight; what was
        checked, with its report."""
        days = self.table.data_days()
        if days is None or not in_window(self.window, now):
            return []
        tonight = window_start(self.window, now)
        ran = []
        for location, endpoint in self.locations():
            next_slice, last_run = self.table.data_progress(location)
            if last_run >= tonight:
                continue
            k = next_slice % days
            report, volumes = self._check(location, endpoint, (k, days))
            self.table.data_checked(location, k + 1, now)
            self._alert(location, f"slice {k + 1}/{days}", report, volumes)
            ran.append((location, report))
        return ran

    def _open(self, location: str, endpoint: str | None) -> Repository:
        if location == str(self.repo):
            return Repository.open(self.repo)
        from cairn.store.cloud import open_cloud

        return open_cloud(location, endpoint, local_key(self.repo))

    def _check(self, location: str, endpoint: str | None, subset: tuple[int, int]
               ) -> tuple[Report, dict[str, str]]:
        """The report, and the volume of each point (to name the machines hurt)."""
        started = time.monotonic()
        with self._open(location, endpoint) as repo:
            report = verify(repo, read_data=True, subset=subset)
            volumes = {p.id: p.volume for p in repo.catalog.points()}
        logs.event("verify_data.done", location=location, slice=f"{subset[0] + 1}/{subset[1]}",
                   chunks=report.chunks, bytes_read=report.bytes_read,
                   damaged=len(report.damaged), seconds=round(time.monotonic() - started, 2))
        return report, volumes

    def _alert(self, location: str, slice_name: str, report: Report,
               volumes: dict[str, str]) -> None:
        subject = f"{location} {slice_name}"
        hurt: dict[str, set[str]] = {}
        for points in report.damaged.values():
            for point in points:
                machine = volumes.get(point, "").partition(".")[0]
                hurt.setdefault(machine, set()).add(point)
        for machine, points in hurt.items():
            named = ", ".join(sorted(points)[:10]) + (" ..." if len(points) > 10 else "")
            raise_alert(self.repo, "damage",
                        f"data verification of {location} ({slice_name}) found damaged "
                        f"chunks hurting point(s) {named}: run `cairn verify --repo "
                        f"{location} --read-data` and back the machine up again to heal",
                        machine, subject)
        store = AlertStore(self.repo / "appliance.db")
        try:
            stale = [a for a in store.alerts(kind="damage")
                     if a.subject == subject and a.machine not in hurt]
        finally:
            store.close()
        for alert in stale:
            resolve_alert(self.repo, "damage", alert.machine, subject)
