"""``/api/v1/agentless-machines``: VMs the appliance backs up itself through QEMU's monitor.

Admin only (the dependency is given where the router is included). Such a machine then takes
schedules, jobs and retention like any other (`/api/v1/machines/{name}/...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cairn import logs
from cairn.appliance.agentless import AgentlessMachine, AgentlessMachines
from cairn.appliance.state import State
from cairn.errors import UsageError
from cairn.store.machine_points import check_machine_name


class NewAgentlessMachine(BaseModel):
    name: str = Field(description="machine name: letters, digits, '_' and '-'")
    qemu: str = Field(min_length=1, max_length=4000, description="QMP socket on this host")
    guest_agent: str | None = Field(default=None, max_length=4000,
                                    description="guest agent socket on this host")


def machine_json(m: AgentlessMachine) -> dict[str, Any]:
    return {"machine": m.name, "qemu": str(m.qmp),
            "guest_agent": str(m.guest_agent) if m.guest_agent else None}


def router(state: State) -> APIRouter:
    api = APIRouter(prefix="/api/v1/agentless-machines", tags=["machines"])
    machines = AgentlessMachines(state)

    @api.get("")
    def list_agentless() -> list[dict[str, Any]]:
        return [machine_json(m) for m in machines.list()]

    @api.post("", status_code=201)
    def add_agentless(body: NewAgentlessMachine) -> dict[str, Any]:
        name = check_machine_name(body.name)
        if "\x00" in body.qemu + (body.guest_agent or ""):
            raise UsageError("a socket path cannot hold a NUL byte: give the path of the "
                             "QMP (and guest agent) socket")
        if state.machine(name) is not None:
            raise UsageError(f"machine {name!r} exists already: remove it first "
                             f"(`cairn machines remove {name}`) or choose another name")
        added = machines.add(name, Path(body.qemu),
                             Path(body.guest_agent) if body.guest_agent else None)
        logs.event("machine.added", machine=name, agentless=True)
        return machine_json(added)

    return api
