"""A machine's recovery points, and retention on demand (the same planner as `cairn prune`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cairn.appliance import retention
from cairn.appliance.auth import AdminOnly, NamedMachine, VisibleMachine
from cairn.appliance.context import Ctx
from cairn.appliance.uploads import store_volume
from cairn.errors import UsageError
from cairn.ops.point_locks import marks_json
from cairn.ops.points import info_json, points_of
from cairn.store import marks
from cairn.store.repository import Repository

router = APIRouter(prefix="/api/v1", tags=["points"])


@router.get("/machines/{name}/points")
def get_points(machine: VisibleMachine, ctx: Ctx) -> list[dict[str, Any]]:
    """Every point of the machine's volumes, in `ops.points.point_json` form with its lock
    and ransomware flags (as `cairn points --json`)."""
    names = {store_volume(machine.name, v): v for v, _ in ctx.state.volumes(machine.id)}
    with Repository.open(ctx.repo_path) as repo:
        found = points_of(repo, list(names))
        marked = marks.all_marks(repo)
    return [{**info_json(info), **marks_json(marked.get(info.point.id, marks.Marks())),
             "machine_volume": names[volume]}
            for volume, infos in found.items() for info in infos]


@router.post("/machines/{name}/prune", dependencies=[AdminOnly])
def prune(machine: NamedMachine, ctx: Ctx) -> dict[str, Any]:
    """Apply the machine's retention policy now; says what went and what stayed, and why."""
    outcome = retention.apply(ctx.repo_path, ctx.state, machine)
    if outcome is None:
        raise UsageError(f"{machine.name} has no retention policy: set one with `cairn "
                         f"schedule set {machine.name} --retention ...`")
    return outcome
