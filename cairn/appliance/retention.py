"""Retention after each backup: prune a machine's volumes by its schedule's policy.

The policy is checked when the schedule is set (`Policy.parse`) and applied right after a
job succeeds, by the same planner as `cairn prune` (`ops.retention`), so points with clones
are kept here too. Retention never fails a backup: a volume busy with another writer is
pruned next time, and any other failure is recorded on the job (``retention.error``, shown
by `cairn jobs`) and logged; the agent's report is answered normally either way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cairn import logs
from cairn.appliance import metrics
from cairn.appliance.state import Machine, State
from cairn.appliance.uploads import store_volume
from cairn.errors import Locked
from cairn.ops.retention import prune
from cairn.store.repository import Repository
from cairn.store.retention import Policy


def apply(repo_path: Path, state: State, machine: Machine) -> dict[str, Any] | None:
    """Prune the machine's volumes by its policy; None when it has no policy.

    Returns ``{"policy": P, "deleted": [...], "held_until": T, "kept": [{"id", "rules"}],
    "deferred": [volumes], "error": None}``: deleted points (not kept by policy ``P``) are
    held restorable until ``T`` (None when nothing went); raises what the store raises,
    except `Locked` (deferred). `cairn jobs` shows it on the job's row.
    """
    schedule = state.schedule(machine.id)
    if schedule is None or not schedule.retention:
        return None
    policy = Policy.parse(schedule.retention)
    outcome: dict[str, Any] = {"policy": schedule.retention, "deleted": [],
                               "held_until": None, "kept": [], "deferred": [], "error": None}
    with Repository.open(repo_path) as repo:
        for volume, _ in state.volumes(machine.id):
            name = store_volume(machine.name, volume)
            if repo.catalog.volume(name) is None:
                continue
            try:
                result = prune(repo, name, policy)
            except Locked:
                logs.event("retention.deferred", machine=machine.name, volume=volume)
                outcome["deferred"].append(volume)
                continue
            outcome["deleted"] += result.deleted
            outcome["held_until"] = result.held_until or outcome["held_until"]
            outcome["kept"] += result.plan.kept_json()
    if outcome["deleted"]:
        metrics.add("cairn_points_pruned_total", len(outcome["deleted"]))
        logs.event("retention.pruned", machine=machine.name, deleted=len(outcome["deleted"]))
    return outcome


def after_job(repo_path: Path, state: State, machine: Machine, job_id: int
              ) -> dict[str, Any] | None:
    """Apply retention after a successful job; the outcome is for the job's record."""
    return guarded(machine.name, job_id, lambda: apply(repo_path, state, machine))


def guarded(machine: str, job_id: int, run: Callable[[], dict[str, Any] | None]
            ) -> dict[str, Any] | None:
    """``run()``'s outcome, or an outcome naming its error.

    Whatever goes wrong is returned, never raised: the backup itself succeeded, and its
    agent must get its answer (a failure here once answered 500 and stopped the agent).
    """
    try:
        return run()
    except Exception as exc:  # recorded on the job and logged: see the docstring
        metrics.add("cairn_retention_failures_total")
        logs.event("retention.failed", machine=machine, job=job_id, error=str(exc))
        return {"deleted": [], "kept": [], "deferred": [], "error": f"retention failed: {exc}"}
