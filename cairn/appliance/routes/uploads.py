"""An agent's uploads: open (or resume), send frames, fetch the parent's hashes, commit.

The work is in `cairn.appliance.uploads.Uploads`; this module is its HTTP face.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from cairn.appliance.auth import AgentMachine, check_name
from cairn.appliance.context import Ctx
from cairn.appliance.uploads import RESUME_PAGE
from cairn.errors import UsageError
from cairn.frames import MAX_FRAME, FrameReader
from cairn.plan import JSON_PLAN, PlanReader

MAX_BODY = 4 * MAX_FRAME

router = APIRouter(prefix="/api/v1/agent/uploads", tags=["uploads"])


class UploadRequest(BaseModel):
    volume: str
    size: int = Field(ge=1, le=1 << 50)


class CommitRequest(BaseModel):
    ranges: list[tuple[int, int]] = Field(max_length=100_000)
    full: bool = False


@router.post("")
def open_upload(body: UploadRequest, machine: AgentMachine, ctx: Ctx) -> dict[str, Any]:
    return ctx.uploads.open(machine, check_name("volume", body.volume), body.size)


@router.get("/{upload_id}/received")
def received(upload_id: str, machine: AgentMachine, ctx: Ctx,
             after: Annotated[int, Query(ge=-1, le=1 << 50)] = -1,
             limit: Annotated[int, Query(ge=1, le=RESUME_PAGE)] = RESUME_PAGE
             ) -> dict[str, Any]:
    """The next page of a resumed upload's frames, after the offset the last page named."""
    return ctx.uploads.received(machine, upload_id, after, limit)


@router.put("/{upload_id}/data", openapi_extra={"requestBody": {
    "required": True,
    "content": {"application/octet-stream": {"schema": {"type": "string",
                                                        "format": "binary"}}}}})
async def put_data(upload_id: str, request: Request, machine: AgentMachine,
                   ctx: Ctx) -> dict[str, int]:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise HTTPException(413, f"body larger than {MAX_BODY} bytes: send smaller batches")
    with ctx.uploads.senders.slot(machine):
        return await _take_frames(upload_id, request, machine, ctx)


async def _take_frames(upload_id: str, request: Request, machine: AgentMachine,
                       ctx: Ctx) -> dict[str, int]:
    """Frames written as they arrive (`Intake`); if the body fails, the frames that
    arrived whole are kept, and the agent resends the rest."""
    intake = await run_in_threadpool(ctx.uploads.intake, machine, upload_id)
    reader, received = FrameReader(intake.upload.size), 0
    try:
        async for piece in request.stream():
            received += len(piece)
            intake.add(reader.feed(piece))
            if intake.full:
                await run_in_threadpool(intake.flush)
        reader.finish()
        if not received:
            raise UsageError(f"body must hold 1 to {MAX_BODY} bytes of frames")
    except Exception:
        await run_in_threadpool(intake.flush, True)
        raise
    else:
        await run_in_threadpool(intake.flush, True)
    finally:
        intake.close()
    return {"frames": intake.frames}


@router.get("/{upload_id}/parent-hashes")
def parent_hashes(upload_id: str, machine: AgentMachine, ctx: Ctx) -> Response:
    return Response(ctx.uploads.parent_hashes(machine, upload_id),
                    media_type="application/octet-stream")


@router.post("/{upload_id}/commit", openapi_extra={"requestBody": {
    "required": True,
    "content": {
        "application/json": {"schema": CommitRequest.model_json_schema()},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
async def commit(upload_id: str, request: Request, machine: AgentMachine, ctx: Ctx,
                 full: bool = False) -> dict[str, Any]:
    """The plan as JSON (up to JSON_PLAN bytes), or binary (`cairn.plan`) with ``?full=``,
    read into `Ranges` as it arrives (16 bytes a range, the body never held whole)."""
    plan: Sequence[tuple[int, int]]
    if request.headers.get("content-type", "").startswith("application/octet-stream"):
        reader = PlanReader()
        async for piece in request.stream():
            reader.feed(piece)
        plan = reader.finish()
    else:
        body = await request.body()
        if len(body) > JSON_PLAN:
            raise HTTPException(413, f"a JSON plan is at most {JSON_PLAN} bytes: send a "
                                     "larger one as application/octet-stream")
        try:
            parsed = CommitRequest.model_validate_json(body)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        plan, full = parsed.ranges, parsed.full
    return await run_in_threadpool(ctx.uploads.commit, machine, upload_id, plan, full)
