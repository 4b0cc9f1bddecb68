"""``/api/v1/space/...`` and ``/api/v1/tasks`` (admin only): free space now, and watch it.

``POST /space/cloud/prune`` (``dry_run``: only say what would be condemned, repacked,
deleted and freed), ``POST /space/cloud/convert`` and ``POST /space/repack`` each start a
task (`appliance.space`, the same calls as `cairn cloud prune|convert` and `cairn repack`)
and answer 202 with it; ``GET /tasks/{id}`` follows it to its end: ``state`` (running,
succeeded, failed), ``progress`` while it runs, ``result`` (one line: the report, or the
error naming the objects at fault) and ``report`` (the CLI's ``--json``). The console's
jobs page lists the same tasks.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from cairn.appliance.context import Ctx
from cairn.appliance.errors import NotFound
from cairn.appliance.space import Space, targets

router = APIRouter(prefix="/api/v1", tags=["space"])
ADMIN = "api"
"""who started a task through the API (the console names its user)"""


class CloudRequest(BaseModel):
    to: str = Field(max_length=1000, description="s3://BUCKET/PREFIX an offsite policy names")


class PruneRequest(CloudRequest):
    dry_run: bool = Field(default=False, description="say what would be freed; change nothing")


class RepackRequest(BaseModel):
    volumes: list[Annotated[str, Field(max_length=200)]] | None = Field(
        default=None, max_length=1000, description="only these volumes (default: all)")
    dry_run: bool = False


def _space(ctx: Ctx) -> Space:
    return Space(ctx.repo_path, ctx.state, ctx.tasks)


@router.get("/space/cloud")
def list_targets(ctx: Ctx) -> list[dict[str, Any]]:
    """The cloud repositories space tasks may run on (those offsite policies send to)."""
    return [{"to": t.url, "endpoint": t.endpoint, "machines": list(t.machines)}
            for t in targets(ctx.state)]


@router.post("/space/cloud/prune", status_code=202)
def prune(body: PruneRequest, ctx: Ctx) -> dict[str, Any]:
    return _space(ctx).prune(body.to, body.dry_run, ADMIN).json()


@router.post("/space/cloud/convert", status_code=202)
def convert(body: CloudRequest, ctx: Ctx) -> dict[str, Any]:
    return _space(ctx).convert(body.to, ADMIN).json()


@router.post("/space/repack", status_code=202)
def repack(body: RepackRequest, ctx: Ctx) -> dict[str, Any]:
    return _space(ctx).repack(body.volumes, body.dry_run, ADMIN).json()


@router.get("/tasks")
def list_tasks(ctx: Ctx) -> list[dict[str, Any]]:
    """Tasks started from the API or the console, newest first (the last 200 kept)."""
    return [t.json() for t in ctx.tasks.recent()]


@router.get("/tasks/{task_id}")
def get_task(task_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)], ctx: Ctx
             ) -> dict[str, Any]:
    task = ctx.tasks.get(task_id)
    if task is None:
        raise NotFound(f"no task {task_id}: tasks live in memory, the last 200 of this run")
    return task.json()
