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
BATCH = 4 * 1024 * 1024  # frames written (and fdatasync'ed) per 4 MiB, an agent's body
SENDS_PER_MACHINE = 2
"""Bodies one machine may send at once: each holds up to a frame and a batch in memory, so
a token holder opening many connections is refused (429, which the agent retries) rather
than multiplying them. An agent sends one at a time; the second covers a retry whose
first attempt the appliance is still reading."""
_sending: dict[int, int] = {}  # machine id -> bodies being read (the event loop's own)

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
    if _sending.get(machine.id, 0) >= SENDS_PER_MACHINE:
        raise HTTPException(429, f"{machine.name} already sends {SENDS_PER_MACHINE} bodies "
                                 "at once: send the next when one is answered")
    _sending[machine.id] = _sending.get(machine.id, 0) + 1
    try:
        return await _take_frames(upload_id, request, machine, ctx)
    finally:
        _sending[machine.id] -= 1


async def _take_frames(upload_id: str, request: Request, machine: AgentMachine,
                       ctx: Ctx) -> dict[str, int]:
    upload = await run_in_threadpool(ctx.uploads.open_for_data, machine, upload_id)
    reader, stored, received = FrameReader(upload.size), 0, 0
    batch: list[tuple[int, bytes]] = []
    async for piece in request.stream():
        received += len(piece)
        batch += reader.feed(piece)
        if sum(len(d) for _, d in batch) >= BATCH:
            stored += await run_in_threadpool(ctx.uploads.put, machine, upload, batch)
            batch = []
    reader.finish()
    if not received:
        raise UsageError(f"body must hold 1 to {MAX_BODY} bytes of frames")
    if batch:
        stored += await run_in_threadpool(ctx.uploads.put, machine, upload, batch)
    return {"frames": stored}


@router.get("/{upload_id}/parent-hashes")
def parent_hashes(upload_id: str, machine: AgentMachine, ctx: Ctx) -> Response:
    return Response(ctx.uploads.parent_hashes(machine, upload_id),
                    media_type="application/octet-stream")


@router.post("/{upload_id}/commit")
def commit(upload_id: str, body: CommitRequest, machine: AgentMachine,
           ctx: Ctx) -> dict[str, Any]:
    return ctx.uploads.commit(machine, upload_id, body.ranges, body.full)
