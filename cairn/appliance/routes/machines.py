"""Machines: the admin adds and removes them; an agent registers its volumes."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from cairn import logs
from cairn.appliance.auth import (
    AdminOnly,
    AgentMachine,
    NamedMachine,
    VisibleMachine,
    check_name,
)
from cairn.appliance.context import Context, Ctx
from cairn.appliance.state import Machine
from cairn.appliance.uploads import store_volume

router = APIRouter(prefix="/api/v1", tags=["machines"])


class NewMachine(BaseModel):
    name: str = Field(description="machine name: letters, digits, '_' and '-'")


class VolumeRegistration(BaseModel):
    size: int = Field(ge=1, le=1 << 50)


def machine_json(ctx: Context, machine: Machine) -> dict[str, Any]:
    """A machine as every face shows it: pairing, liveness, volumes, schedule, active job."""
    schedule = ctx.state.schedule(machine.id)
    seen = machine.last_seen
    return {
        "name": machine.name, "created": machine.created, "paired": machine.paired,
        "last_seen": seen,
        "online": bool(seen and time.time() - seen <= ctx.config.offline_after_seconds),
        "volumes": [{"name": n, "size": s} for n, s in ctx.state.volumes(machine.id)],
        "schedule": None if schedule is None else {
            "every": schedule.every, "cron": schedule.cron,
            "retention": schedule.retention, "next_run": schedule.next_run},
        "active_job": ctx.state.active_job(machine.id),
    }


@router.get("/machines", dependencies=[AdminOnly])
def list_machines(ctx: Ctx) -> list[dict[str, Any]]:
    return [machine_json(ctx, m) for m in ctx.state.machines()]


@router.post("/machines", dependencies=[AdminOnly], status_code=201)
def add_machine(body: NewMachine, ctx: Ctx) -> dict[str, str]:
    name = check_name("machine", body.name)
    token = ctx.state.add_machine(name)
    logs.event("machine.added", machine=name)
    return {"machine": name, "pairing_token": token}


@router.get("/machines/{name}")
def get_machine(machine: VisibleMachine, ctx: Ctx) -> dict[str, Any]:
    return machine_json(ctx, machine)


@router.delete("/machines/{name}", dependencies=[AdminOnly], status_code=204)
def remove_machine(machine: NamedMachine, ctx: Ctx) -> Response:
    ctx.state.remove_machine(machine.id)
    logs.event("machine.removed", machine=machine.name)
    return Response(status_code=204)


@router.get("/machines/{name}/volumes")
def get_volumes(machine: VisibleMachine, ctx: Ctx) -> list[dict[str, Any]]:
    return [{"name": n, "size": s, "store_volume": store_volume(machine.name, n)}
            for n, s in ctx.state.volumes(machine.id)]


@router.put("/agent/volumes/{volume}")
def register_volume(volume: str, body: VolumeRegistration, machine: AgentMachine,
                    ctx: Ctx) -> dict[str, Any]:
    ctx.state.register_volume(machine.id, check_name("volume", volume), body.size)
    return {"machine": machine.name, "volume": volume, "size": body.size}
