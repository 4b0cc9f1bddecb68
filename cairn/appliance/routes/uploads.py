"""An agent's uploads: open (or resume), send frames, fetch the parent's hashes, commit.

The work is in `cairn.appliance.uploads.Uploads`; this module is its HTTP face.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from cairn.appliance.auth import AgentMachine, check_name
from cairn.appliance.context import Ctx
from cairn.errors import UsageError
from cairn.frames import MAX_FRAME, FrameReader

MAX_BODY = 4 * MAX_FRAME

router = APIRouter(prefix="/api/v1/agent/uploads", tags=["uploads"])


class UploadRequest(BaseModel):
    volume: str
    size: int = Field(ge=1, le=1 << 50)


class CommitRequest(BaseModel):
    ranges: list[tuple[int, int]] = Field(max_length=10_000_000)
    full: bool = False


@router.post("")
def open_upload(body: UploadRequest, machine: AgentMachine, ctx: Ctx) -> dict[str, Any]:
    return ctx.uploads.open(machine, check_name("volume", body.volume), body.size)


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


@router.post("/{upload_id}/commit")
def commit(upload_id: str, body: CommitRequest, machine: AgentMachine,
           ctx: Ctx) -> dict[str, Any]:
    return ctx.uploads.commit(machine, upload_id, body.ranges, body.full)
