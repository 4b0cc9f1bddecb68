"""``/api/v1/lans``: the isolated LANs VMs may join (`cairn.virt.lans`), `cairn vm lan ...`.

Admin only (the dependency is given where the router is included). A LAN with VMs on it
cannot be removed (409).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from cairn import logs
from cairn.virt.lans import LAN_NAME
from cairn.virt.vms import VmManager


class NewLan(BaseModel):
    name: str = Field(max_length=32)


def router(manager: VmManager) -> APIRouter:
    api = APIRouter(prefix="/api/v1/lans")

    @api.get("")
    def list_lans() -> list[dict[str, Any]]:
        return [_shown(asdict(lan)) for lan in manager.lans.list()]

    @api.post("", status_code=201)
    def add_lan(body: NewLan) -> dict[str, Any]:
        lan = manager.lans.add(body.name)
        logs.event("lan.added", lan=lan.name)
        return _shown(asdict(lan))

    @api.delete("/{name}", status_code=204)
    def remove_lan(name: Annotated[str, PathParam(pattern=LAN_NAME.pattern)]) -> Response:
        manager.remove_lan(name)
        logs.event("lan.removed", lan=name)
        return Response(status_code=204)

    return api


def _shown(lan: dict[str, Any]) -> dict[str, Any]:
    """A LAN as listed: its identity stays inside the appliance."""
    return {"name": lan["name"], "created": lan["created"]}
