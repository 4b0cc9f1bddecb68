"""Retention, planned in one place: what a policy deletes, what it keeps, and why.

`cairn prune`, the appliance's retention after each job and its prune endpoint all call
`prune`. A point is kept when a policy rule keeps it (``last``, ``hourly`` ...) or when a
*keep rule* says it must stay whatever the policy: a point with a clone (the clone reads
it), a locked point, a point flagged as suspicious. Each kept point carries its reasons, so every
face can say why a point the policy would drop is still there.

A keep rule is a function from the volume's points to ``{point id: reason}``; add one to
`KEEP_RULES` and every policy deletion honours it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cairn.errors import InUse
from cairn.store import marks
from cairn.store.catalog import RecoveryPoint
from cairn.store.clones import list_clones
from cairn.store.delete import purge_expired
from cairn.store.machine_points import MachinePoints
from cairn.store.repository import Repository
from cairn.store.retention import Policy, select
from cairn.store.space import freed_by

KeepRule = Callable[[Repository, Sequence[RecoveryPoint]], dict[str, str]]


def has_clone(repo: Repository, points: Sequence[RecoveryPoint]) -> dict[str, str]:
    """A clone reads its point: deleting the point would take the clone's base away."""
    ids = {p.id for p in points}
    return {c.point_id: "has a clone" for c in list_clones(repo) if c.point_id in ids}


def marked(repo: Repository, points: Sequence[RecoveryPoint]) -> dict[str, str]:
    """A locked point (until its lock ends) and a point flagged as suspicious stay."""
    return marks.keep_reasons(repo, points)


KEEP_RULES: list[KeepRule] = [has_clone, marked]


def keep_reasons(repo: Repository, points: Sequence[RecoveryPoint]) -> dict[str, list[str]]:
    """Why each of ``points`` must stay whatever a policy says (by `KEEP_RULES`); a point
    with no reason is absent. Machine points ask this for their disks' points."""
    reasons: dict[str, list[str]] = {}
    for rule in KEEP_RULES:
        for point_id, reason in rule(repo, points).items():
            reasons.setdefault(point_id, []).append(reason)
    return reasons


@dataclass(frozen=True)
class RetentionPlan:
    """What a policy does to one volume: each point in creation order, with the reasons it
    is kept (policy rules such as ``daily``, or keep rules such as ``has a clone``); a point
    with no reason is doomed."""

    volume: str
    points: list[RecoveryPoint]
    reasons: dict[str, list[str]]

    @property
    def doomed(self) -> list[RecoveryPoint]:
        return [p for p in self.points if p.id not in self.reasons]

    def kept_json(self) -> list[dict[str, Any]]:
        return [{"id": p.id, "rules": self.reasons[p.id]}
                for p in self.points if p.id in self.reasons]


@dataclass(frozen=True)
class RetentionResult:
    """A plan and what carrying it out did: ``deleted`` is what the plan dooms (what it
    would delete, on a dry run), held restorable until ``held_until``; ``freed_chunks`` is
    what held points whose window had passed gave back."""

    plan: RetentionPlan
    dry_run: bool
    freed_chunks: int = 0
    held_until: float | None = None
    frees_bytes: int | None = None
    """What deleting the doomed points frees (`space.freed_by`, None: a block map is
    damaged): at the end of their deletion window, as measured when planned."""

    @property
    def deleted(self) -> list[str]:
        return [p.id for p in self.plan.doomed]

    def json(self) -> dict[str, Any]:
        return {"volume": self.plan.volume, "dry_run": self.dry_run,
                "kept": self.plan.kept_json(), "deleted": self.deleted,
                "held_until": self.held_until, "freed_chunks": self.freed_chunks,
                "frees_bytes": self.frees_bytes}


def plan(repo: Repository, volume: str, policy: Policy) -> RetentionPlan:
    """The plan for ``volume`` now; `UsageError` for an empty policy or unknown volume."""
    points = marks.live_points(repo, repo.volume(volume).id)
    keep = select(points, policy)
    for point_id, reasons in keep_reasons(repo, points).items():
        keep.setdefault(point_id, []).extend(reasons)
    return RetentionPlan(volume, points, keep)


def prune(repo: Repository, volume: str, policy: Policy, dry_run: bool = False
          ) -> RetentionResult:
    """Plan, and unless ``dry_run`` delete what the plan does not keep.

    Deleted points are held for the deletion window (`marks.hold`), restorable with
    `cairn undelete` as after `cairn delete`: a stolen login that sets a policy of one
    point must not destroy the rest. Held points whose window ended are then reclaimed
    (`purge`). A clone made between planning and holding makes the hold refuse (`InUse`)
    before anything is marked; the plan is then made once more, with that clone seen.
    """
    planned = plan(repo, volume, policy)
    if dry_run:
        return RetentionResult(planned, True, frees_bytes=freed_by(repo, planned.doomed))
    try:
        frees = freed_by(repo, planned.doomed)
        until = marks.hold(repo, planned.doomed)
    except InUse:
        planned = plan(repo, volume, policy)
        frees = freed_by(repo, planned.doomed)
        until = marks.hold(repo, planned.doomed)
    return RetentionResult(planned, False, purge(repo), until if planned.doomed else None,
                           frees)


def purge(repo: Repository) -> int:
    """Reclaim the held points whose deletion window has passed (`purge_expired`), and drop
    the machine-point groups left without a disk (and their records in a cloud bucket);
    returns the chunks freed. In a cloud repository, space comes back by the cloud's prune
    (`cloud_space.after_delete`)."""
    from cairn.store.cloud_machines import unpublish

    before = len(repo.catalog.points())
    freed = purge_expired(repo)
    unpublish(repo, MachinePoints(repo.catalog).forget_empty())
    if repo.remote is not None and len(repo.catalog.points()) < before:
        from cairn.ops.cloud_space import after_delete

        after_delete(repo)
    return freed
