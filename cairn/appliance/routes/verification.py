"""``/api/v1/verification`` and ``/api/v1/machines/{name}/verification`` (admin only): when a
machine's points are booted and read, and how often the stored data is re-read."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cairn import logs
from cairn.appliance.errors import NotFound
from cairn.appliance.state import State
from cairn.appliance.verification import VerificationTable


class VerificationRequest(BaseModel):
    screenshot: str = Field(default="off", description="each, daily, weekly or off")
    expect_text: str | None = Field(default=None, max_length=200,
                                    description="text that means booted (default: a login, "
                                                "sign-in or lock screen)")
    verify_data: int | None = Field(default=None, description="read all data every N days")


def router(state: State) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["verification"])
    table = VerificationTable(state)

    @api.get("/verification")
    def list_policies() -> list[dict[str, Any]]:
        return [p.json() for p in table.policies()]

    @api.put("/machines/{name}/verification")
    def set_policy(name: str, body: VerificationRequest) -> dict[str, Any]:
        machine = state.machine(name)
        if machine is None:
            raise NotFound(f"no machine {name!r}: `cairn machines` lists them")
        table.set(machine.id, body.screenshot, body.expect_text, body.verify_data)
        logs.event("verification.set", machine=name, screenshot=body.screenshot,
                   expect_text=body.expect_text, verify_data=body.verify_data)
        policy = table.policy(machine.id)
        assert policy is not None
        return policy.json()

    return api
