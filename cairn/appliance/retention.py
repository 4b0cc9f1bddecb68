"""Retention after each backup: prune a machine's volumes by its schedule's policy.

The policy is checked when the schedule is set (`Policy.parse`), applied right after a job
succeeds, and never blocks a backup: a volume busy with another writer is pruned next time.
"""

from __future__ import annotations

from pathlib import Path

from cairn import logs
from cairn.appliance import metrics
from cairn.appliance.state import Machine, State
from cairn.appliance.uploads import store_volume
from cairn.errors import Locked
from cairn.store import marks
from cairn.store.delete import delete_points, purge_expired
from cairn.store.repository import Repository
from cairn.store.retention import Policy, select


def apply(repo_path: Path, state: State, machine: Machine) -> int:
    """Delete the points the machine's policy does not keep; returns how many went."""
    schedule = state.schedule(machine.id)
    if schedule is None or not schedule.retention:
        return 0
    policy = Policy.parse(schedule.retention)
    repo = Repository.open(repo_path)
    deleted = 0
    try:
        for volume, _ in state.volumes(machine.id):
            vol = repo.catalog.volume(store_volume(machine.name, volume))
            if vol is None:
                continue
            points = marks.live_points(repo, vol.id)
            keep = select(points, policy)
            keep.update({p: [r] for p, r in marks.keep_reasons(repo, points).items()})
            doomed = [p for p in points if p.id not in keep]
            try:
                delete_points(repo, doomed)
            except Locked:
                logs.event("retention.deferred", machine=machine.name, volume=volume)
                continue
            deleted += len(doomed)
        try:
            purge_expired(repo)
        except Locked:
            logs.event("purge.deferred", machine=machine.name)
    finally:
        repo.close()
    if deleted:
        metrics.add("cairn_points_pruned_total", deleted)
        logs.event("retention.pruned", machine=machine.name, deleted=deleted)
    return deleted
