"""The REST API (OpenAPI at ``/docs``): admins manage, agents upload, Prometheus scrapes.

Three kinds of caller, told apart by their bearer token: the admin (token made at first
start, in ``<repo>/admin-token``), an agent (token issued at pairing, scoped to its one
machine: any other machine's objects answer 403), and nobody (pairing, health).
``/metrics`` takes the admin token or a metrics-only token (`cairn.appliance.tokens`).
Every refusal is a 4xx with ``{"detail": "one line naming the problem and the fix"}``; a
500 means a bug.
"""


import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from cairn import __version__, logs
from cairn.appliance import metrics, retention
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.limits import BodyLimit
from cairn.appliance.routes import agentless as agentless_routes
from cairn.appliance.routes import alerts as alerts_routes
from cairn.appliance.routes import offsite as offsite_routes
from cairn.appliance.routes import tokens as tokens_routes
from cairn.appliance.routes import verification as verification_routes
from cairn.appliance.state import Machine, State
from cairn.appliance.uploads import Conflict, Forbidden, NotFound, Uploads, store_volume
from cairn.appliance.vm_routes import vm_router
from cairn.errors import CairnError, Locked, UsageError
from cairn.frames import MAX_FRAME, FrameReader
from cairn.ops import schedules
from cairn.ops.detect import after_backup
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository
from cairn.virt.vms import VmManager
from cairn.web import install as install_console

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
MAX_BODY = 4 * MAX_FRAME


SQLITE_MAX = 2**63 - 1
# Ids are SQLite integers: anything outside their range is a 422, not a crash in the query.
JobId = Annotated[int, PathParam(ge=1, le=SQLITE_MAX)]

class NewMachine(BaseModel):
    name: str = Field(description="machine name: letters, digits, '_' and '-'")


class PairRequest(BaseModel):
    token: str = Field(min_length=8, max_length=200)


class VolumeRegistration(BaseModel):
    size: int = Field(ge=1, le=1 << 50)


class JobRequest(BaseModel):
    full_rescan: bool = False


class JobReport(BaseModel):
    ok: bool
    error: str | None = Field(default=None, max_length=20000)
    bytes_read: int = Field(default=0, ge=0)
    points: list[str] = Field(default_factory=list, max_length=1000)


class UploadRequest(BaseModel):
    volume: str
    size: int = Field(ge=1, le=1 << 50)


class CommitRequest(BaseModel):
    ranges: list[tuple[int, int]] = Field(max_length=10_000_000)
    full: bool = False


class ScheduleRequest(BaseModel):
    every: str | None = Field(default=None, description="interval like 5m, 1h")
    cron: str | None = Field(default=None, description="five-field cron expression")
    retention: str | None = Field(default=None, description='e.g. "hourly=24,daily=14"')


def point_json(p: RecoveryPoint) -> dict[str, Any]:
    return {"id": p.id, "volume": p.volume, "created": p.created, "size": p.size,
            "allocated": p.allocated, "bytes_read": p.bytes_read,
            "bytes_stored": p.bytes_stored, "seconds": p.seconds}


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name):
        raise UsageError(f"invalid {kind} name {name!r}: use letters, digits, '_' and '-' "
                         "(up to 63, starting with a letter or digit)")
    return name


def create_app(repo_path: Path, state: State, config: ApplianceConfig) -> FastAPI:
    app = FastAPI(title="cairn appliance", version=__version__,
                  description="Backups where every recovery point is whole.")
    app.add_middleware(BodyLimit, known=lambda t: state.is_admin(t) or bool(state.agent(t)))
    uploads = Uploads(repo_path, state)

    def _status(status: int, message: str) -> JSONResponse:
        if 400 <= status < 500:
            metrics.add("cairn_http_client_errors_total")
        return JSONResponse({"detail": message}, status_code=status)

    def answer(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
        async def handler(_: Request, exc: Exception) -> JSONResponse:
            return _status(status, str(exc))
        return handler

    for error, status in ((UsageError, 400), (Forbidden, 403), (NotFound, 404),
                          (Locked, 409), (Conflict, 409)):
        app.add_exception_handler(error, answer(status))

    @app.exception_handler(CairnError)
    async def _cairn(_: Request, exc: CairnError) -> JSONResponse:
        """Not the request's fault: 503 when trying again may help, else 500."""
        logs.event("request.failed", error=str(exc))
        return JSONResponse({"detail": str(exc)}, status_code=503 if exc.retryable else 500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _status(422, f"invalid request: {where}: {first.get('msg', 'malformed')}")

    # -- who is calling ----------------------------------------------------------------

    def _bearer(authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise HTTPException(401, "no token: send 'Authorization: Bearer TOKEN'")
        return authorization[len("Bearer "):].strip()

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        token = _bearer(authorization)
        if state.is_admin(token):
            return
        if state.agent(token) is not None:
            raise HTTPException(403, "an agent token cannot do this: use the admin token")
        raise HTTPException(401, "unknown token: use the admin token from <repo>/admin-token")

    def agent(authorization: Annotated[str | None, Header()] = None) -> Machine:
        machine = state.agent(_bearer(authorization))
        if machine is None:
            raise HTTPException(401, "unknown agent token: pair again with `cairn agent pair`")
        state.seen(machine.id)
        return machine

    def machine_for(name: str, authorization: str | None) -> Machine:
        """``name`` if the caller is the admin or that machine's own agent."""
        token = _bearer(authorization)
        machine = state.machine(check_name("machine", name))
        if state.is_admin(token):
            if machine is None:
                raise NotFound(f"no machine {name!r}: `cairn machines` lists them")
            return machine
        caller = state.agent(token)
        if caller is None:
            raise HTTPException(401, "unknown token")
        if machine is None or caller.id != machine.id:
            raise Forbidden(f"this agent's token is for {caller.name}, not {name}")
        return machine

    def describe(machine: Machine) -> dict[str, Any]:
        schedule = state.schedule(machine.id)
        seen = machine.last_seen
        return {
            "name": machine.name, "created": machine.created, "paired": machine.paired,
            "last_seen": seen,
            "online": bool(seen and time.time() - seen <= config.offline_after_seconds),
            "volumes": [{"name": n, "size": s} for n, s in state.volumes(machine.id)],
            "schedule": None if schedule is None else {
                "every": schedule.every, "cron": schedule.cron,
                "retention": schedule.retention, "next_run": schedule.next_run},
            "active_job": state.active_job(machine.id),
        }

    # -- open endpoints ----------------------------------------------------------------

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    def scraper(authorization: Annotated[str | None, Header()] = None) -> None:
        if state.token_scope(_bearer(authorization)) is None:
            raise HTTPException(401, "unknown token: use the admin token or a metrics token "
                                     "(`cairn tokens add --metrics`)")

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[Depends(scraper)])
    def prometheus() -> str:
        return metrics.render(state, config.offline_after_seconds)

    @app.post("/api/v1/pair")
    def pair(body: PairRequest) -> dict[str, str]:
        result = state.pair(body.token)
        if result is None:
            raise HTTPException(403, "pairing token unknown, used or expired: make a new one "
                                     "with `cairn machines add NAME`")
        machine, token = result
        logs.event("machine.paired", machine=machine.name)
        return {"machine": machine.name, "token": token}

    # -- admin: machines, jobs, schedules ----------------------------------------------

    @app.get("/api/v1/machines", dependencies=[Depends(admin)])
    def list_machines() -> list[dict[str, Any]]:
        return [describe(m) for m in state.machines()]

    @app.post("/api/v1/machines", dependencies=[Depends(admin)], status_code=201)
    def add_machine(body: NewMachine) -> dict[str, str]:
        name = check_name("machine", body.name)
        token = state.add_machine(name)
        logs.event("machine.added", machine=name)
        return {"machine": name, "pairing_token": token}

    @app.get("/api/v1/machines/{name}")
    def get_machine(name: str,
                    authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        return describe(machine_for(name, authorization))

    @app.delete("/api/v1/machines/{name}", dependencies=[Depends(admin)], status_code=204)
    def remove_machine(name: str) -> Response:
        machine = state.machine(check_name("machine", name))
        if machine is None:
            raise NotFound(f"no machine {name!r}")
        state.remove_machine(machine.id)
        logs.event("machine.removed", machine=name)
        return Response(status_code=204)

    @app.get("/api/v1/machines/{name}/volumes")
    def get_volumes(name: str, authorization: Annotated[str | None, Header()] = None
                    ) -> list[dict[str, Any]]:
        machine = machine_for(name, authorization)
        return [{"name": n, "size": s, "store_volume": store_volume(machine.name, n)}
                for n, s in state.volumes(machine.id)]

    @app.get("/api/v1/machines/{name}/points")
    def get_points(name: str, authorization: Annotated[str | None, Header()] = None
                   ) -> list[dict[str, Any]]:
        machine = machine_for(name, authorization)
        repo = Repository.open(repo_path)
        try:
            out = []
            for volume, _ in state.volumes(machine.id):
                vol = repo.catalog.volume(store_volume(machine.name, volume))
                if vol is not None:
                    out.extend({**point_json(p), "machine_volume": volume}
                               for p in repo.catalog.points(vol.id))
            return out
        finally:
            repo.close()

    @app.post("/api/v1/machines/{name}/jobs", dependencies=[Depends(admin)], status_code=201)
    def run_job(name: str, body: JobRequest) -> dict[str, Any]:
        machine = state.machine(check_name("machine", name))
        if machine is None:
            raise NotFound(f"no machine {name!r}: `cairn machines` lists them")
        job_id, created = state.queue_job(machine.id, "manual", body.full_rescan)
        if not created:
            raise Conflict(f"{name} already has job {job_id} queued or running: jobs never "
                           "overlap on one machine; wait for it (`cairn jobs --follow`)")
        logs.event("job.queued", machine=name, job=job_id, reason="manual")
        return state.job(job_id) or {}

    @app.post("/api/v1/machines/{name}/prune", dependencies=[Depends(admin)])
    def prune(name: str) -> dict[str, int]:
        machine = state.machine(check_name("machine", name))
        if machine is None:
            raise NotFound(f"no machine {name!r}")
        return {"deleted": retention.apply(repo_path, state, machine)}

    @app.get("/api/v1/jobs", dependencies=[Depends(admin)])
    def list_jobs(machine: str | None = None,
                  since: Annotated[int, Query(ge=0, le=SQLITE_MAX)] = 0,
                  limit: Annotated[int, Query(ge=1, le=10_000)] = 200
                  ) -> list[dict[str, Any]]:
        machine_id = None
        if machine is not None:
            found = state.machine(check_name("machine", machine))
            if found is None:
                raise NotFound(f"no machine {machine!r}")
            machine_id = found.id
        if not 1 <= limit <= 10_000:
            raise UsageError("limit must be between 1 and 10000")
        return state.jobs(machine_id=machine_id, since_id=since, limit=limit)

    @app.get("/api/v1/jobs/{job_id}", dependencies=[Depends(admin)])
    def get_job(job_id: JobId) -> dict[str, Any]:
        job = state.job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        return job

    @app.get("/api/v1/schedules", dependencies=[Depends(admin)])
    def list_schedules() -> list[dict[str, Any]]:
        return [{"machine": s.machine, "every": s.every, "cron": s.cron,
                 "retention": s.retention, "next_run": s.next_run} for s in state.schedules()]

    @app.put("/api/v1/machines/{name}/schedule", dependencies=[Depends(admin)])
    def set_schedule(name: str, body: ScheduleRequest) -> dict[str, Any]:
        machine = state.machine(check_name("machine", name))
        if machine is None:
            raise NotFound(f"no machine {name!r}")
        schedules.set_schedule(state, config, machine, body.every, body.cron, body.retention)
        return describe(machine)

    @app.delete("/api/v1/machines/{name}/schedule", dependencies=[Depends(admin)],
                status_code=204)
    def delete_schedule(name: str) -> Response:
        machine = state.machine(check_name("machine", name))
        if machine is None:
            raise NotFound(f"no machine {name!r}")
        state.delete_schedule(machine.id)
        return Response(status_code=204)

    app.include_router(vm_router(VmManager(repo_path), admin))

    # -- agents --------------------------------------------------------------------------

    @app.put("/api/v1/agent/volumes/{volume}")
    def register_volume(volume: str, body: VolumeRegistration,
                        machine: Annotated[Machine, Depends(agent)]) -> dict[str, Any]:
        state.register_volume(machine.id, check_name("volume", volume), body.size)
        return {"machine": machine.name, "volume": volume, "size": body.size}

    @app.post("/api/v1/agent/jobs/next")
    def next_job(machine: Annotated[Machine, Depends(agent)]) -> Response:
        job = state.take_job(machine.id)
        if job is None:
            return Response(status_code=204)
        logs.event("job.started", machine=machine.name, job=job["id"],
                   attempt=job["attempts"])
        return JSONResponse(job)

    @app.post("/api/v1/agent/jobs/{job_id}/finish")
    def finish_job(job_id: JobId, body: JobReport,
                   machine: Annotated[Machine, Depends(agent)]) -> dict[str, Any]:
        job = state.job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}")
        if job["machine_id"] != machine.id:
            raise Forbidden(f"job {job_id} belongs to another machine")
        stored = 0
        repo = Repository.open(repo_path)
        try:
            for point_id in body.points:
                point = repo.catalog.point(point_id)
                if point is None or not point.volume.startswith(machine.name + "."):
                    raise Forbidden(f"point {point_id} is not a point of {machine.name}")
                stored += point.bytes_stored
                after_backup(repo, point, machine.name)
        finally:
            repo.close()
        state.finish_job(job_id, body.ok, body.error, body.bytes_read, stored, body.points)
        logs.event("job.finished", machine=machine.name, job=job_id, ok=body.ok,
                   error=body.error, bytes_read=body.bytes_read, bytes_stored=stored)
        if body.ok:
            retention.apply(repo_path, state, machine)
        return state.job(job_id) or {}

    @app.post("/api/v1/agent/uploads")
    def open_upload(body: UploadRequest,
                    machine: Annotated[Machine, Depends(agent)]) -> dict[str, Any]:
        return uploads.open(machine, check_name("volume", body.volume), body.size)

    @app.put("/api/v1/agent/uploads/{upload_id}/data", openapi_extra={"requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}}}}})
    async def put_data(upload_id: str, request: Request,
                       machine: Annotated[Machine, Depends(agent)]) -> dict[str, int]:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise HTTPException(413, f"body larger than {MAX_BODY} bytes: send smaller batches")
        upload = await run_in_threadpool(uploads.open_for_data, machine, upload_id)
        reader, stored, received = FrameReader(upload.size), 0, 0
        batch: list[tuple[int, bytes]] = []
        async for piece in request.stream():
            received += len(piece)
            batch += reader.feed(piece)
            if sum(len(d) for _, d in batch) >= MAX_FRAME:
                stored += await run_in_threadpool(uploads.put, machine, upload, batch)
                batch = []
        reader.finish()
        if not received:
            raise UsageError(f"body must hold 1 to {MAX_BODY} bytes of frames")
        if batch:
            stored += await run_in_threadpool(uploads.put, machine, upload, batch)
        return {"frames": stored}

    @app.get("/api/v1/agent/uploads/{upload_id}/parent-hashes")
    def parent_hashes(upload_id: str, machine: Annotated[Machine, Depends(agent)]) -> Response:
        return Response(uploads.parent_hashes(machine, upload_id),
                        media_type="application/octet-stream")

    @app.post("/api/v1/agent/uploads/{upload_id}/commit")
    def commit(upload_id: str, body: CommitRequest,
               machine: Annotated[Machine, Depends(agent)]) -> dict[str, Any]:
        return uploads.commit(machine, upload_id, body.ranges, body.full)

    app.include_router(alerts_routes.router(repo_path), dependencies=[Depends(admin)])
    app.include_router(agentless_routes.router(state), dependencies=[Depends(admin)])
    app.include_router(tokens_routes.router(repo_path, state), dependencies=[Depends(admin)])
    app.include_router(offsite_routes.router(repo_path, state, config),
                       dependencies=[Depends(admin)])
    app.include_router(verification_routes.router(state), dependencies=[Depends(admin)])
    install_console(app, repo_path, state, config)
    return app
