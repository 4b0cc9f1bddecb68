"""Schedules: when each machine backs up (an interval or a cron line) and what it keeps."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from cairn.appliance import scheduler
from cairn.appliance.auth import AdminOnly, NamedMachine
from cairn.appliance.context import Ctx
from cairn.appliance.routes.machines import machine_json

router = APIRouter(prefix="/api/v1", tags=["schedules"], dependencies=[AdminOnly])


class ScheduleRequest(BaseModel):
    every: str | None = Field(default=None, description="interval like 5m, 1h")
    cron: str | None = Field(default=None, description="five-field cron expression")
    retention: str | None = Field(default=None, description='e.g. "hourly=24,daily=14"')


@router.get("/schedules")
def list_schedules(ctx: Ctx) -> list[dict[str, Any]]:
    return [{"machine": s.machine, "every": s.every, "cron": s.cron,
             "retention": s.retention, "next_run": s.next_run} for s in ctx.state.schedules()]


@router.put("/machines/{name}/schedule")
def set_schedule(machine: NamedMachine, body: ScheduleRequest, ctx: Ctx) -> dict[str, Any]:
    scheduler.set_schedule(ctx.state, ctx.config, machine, body.every, body.cron,
                           body.retention)
    return machine_json(ctx, machine)


@router.delete("/machines/{name}/schedule", status_code=204)
def delete_schedule(machine: NamedMachine, ctx: Ctx) -> Response:
    ctx.state.delete_schedule(machine.id)
    return Response(status_code=204)
