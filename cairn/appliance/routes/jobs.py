"""Jobs: the admin queues and lists them; an agent takes its next one and reports the end.

A job's end runs retention (`appliance.retention.after_job`) before it is recorded, so the
job is stored with what retention did, and whatever retention meets is on the job, not in
the answer to the agent.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cairn import logs
from cairn.appliance import retention
from cairn.appliance.auth import AdminOnly, AgentMachine, NamedMachine, check_name
from cairn.appliance.context import Ctx
from cairn.appliance.errors import Conflict, Forbidden, NotFound
from cairn.appliance.state import Job, Machine
from cairn.errors import UsageError
from cairn.ops.detect import after_backup
from cairn.store.repository import Repository

SQLITE_MAX = 2**63 - 1
# Ids are SQLite integers: anything outside their range is a 422, not a crash in the query.
JobId = Annotated[int, PathParam(ge=1, le=SQLITE_MAX)]

router = APIRouter(prefix="/api/v1", tags=["jobs"])


class JobRequest(BaseModel):
    full_rescan: bool = False


class JobReport(BaseModel):
    ok: bool
    error: str | None = Field(default=None, max_length=20000)
    bytes_read: int = Field(default=0, ge=0)
    points: list[str] = Field(default_factory=list, max_length=1000)


def _job(ctx: Ctx, job_id: int) -> Job:
    job = ctx.state.job(job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


@router.post("/machines/{name}/jobs", dependencies=[AdminOnly], status_code=201)
def run_job(machine: NamedMachine, body: JobRequest, ctx: Ctx) -> dict[str, Any]:
    job_id, created = ctx.state.queue_job(machine.id, "manual", body.full_rescan)
    if not created:
        raise Conflict(f"{machine.name} already has job {job_id} queued or running: jobs "
                       "never overlap on one machine; wait for it (`cairn jobs --follow`)")
    logs.event("job.queued", machine=machine.name, job=job_id, reason="manual")
    return _job(ctx, job_id).json()


@router.get("/jobs", dependencies=[AdminOnly])
def list_jobs(ctx: Ctx, machine: str | None = None,
              since: Annotated[int, Query(ge=0, le=SQLITE_MAX)] = 0,
              limit: Annotated[int, Query(ge=1, le=10_000)] = 200) -> list[dict[str, Any]]:
    machine_id = None
    if machine is not None:
        found = ctx.state.machine(check_name("machine", machine))
        if found is None:
            raise NotFound(f"no machine {machine!r}")
        machine_id = found.id
    if not 1 <= limit <= 10_000:
        raise UsageError("limit must be between 1 and 10000")
    return [j.json() for j in ctx.state.jobs(machine_id=machine_id, since_id=since,
                                             limit=limit)]


@router.get("/jobs/{job_id}", dependencies=[AdminOnly])
def get_job(job_id: JobId, ctx: Ctx) -> dict[str, Any]:
    return _job(ctx, job_id).json()


@router.post("/agent/jobs/next")
def next_job(machine: AgentMachine, ctx: Ctx) -> Response:
    job = ctx.state.take_job(machine.id)
    if job is None:
        return Response(status_code=204)
    logs.event("job.started", machine=machine.name, job=job.id, attempt=job.attempts)
    return JSONResponse(job.json())


def _stored(ctx: Ctx, machine: Machine, point_ids: list[str]) -> int:
    """Bytes the reported points stored; each must be a point of the reporting machine, and
    each is checked for signs of ransomware (`ops.detect`)."""
    stored = 0
    with Repository.open(ctx.repo_path) as repo:
        for point_id in point_ids:
            point = repo.catalog.point(point_id)
            if point is None or not point.volume.startswith(machine.name + "."):
                raise Forbidden(f"point {point_id} is not a point of {machine.name}")
            stored += point.bytes_stored
            after_backup(repo, point, machine.name)
    return stored


@router.post("/agent/jobs/{job_id}/finish")
def finish_job(job_id: JobId, body: JobReport, machine: AgentMachine,
               ctx: Ctx) -> dict[str, Any]:
    if _job(ctx, job_id).machine_id != machine.id:
        raise Forbidden(f"job {job_id} belongs to another machine")
    stored = _stored(ctx, machine, body.points)
    if body.ok:
        ctx.state.record_retention(
            job_id, retention.after_job(ctx.repo_path, ctx.state, machine, job_id))
    ctx.state.finish_job(job_id, body.ok, body.error, body.bytes_read, stored, body.points)
    logs.event("job.finished", machine=machine.name, job=job_id, ok=body.ok,
               error=body.error, bytes_read=body.bytes_read, bytes_stored=stored)
    return _job(ctx, job_id).json()
