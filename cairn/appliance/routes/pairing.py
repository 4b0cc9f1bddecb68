"""``POST /api/v1/pair``: an agent trades its one-time pairing token for its agent token."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from cairn import logs
from cairn.appliance.context import Ctx

router = APIRouter(prefix="/api/v1", tags=["pairing"])


class PairRequest(BaseModel):
    token: str = Field(min_length=8, max_length=200)


@router.post("/pair")
def pair(body: PairRequest, ctx: Ctx) -> dict[str, str]:
    result = ctx.state.pair(body.token)
    if result is None:
        raise HTTPException(403, "pairing token unknown, used or expired: make a new one "
                                 "with `cairn machines add NAME`")
    machine, token = result
    logs.event("machine.paired", machine=machine.name)
    return {"machine": machine.name, "token": token}
