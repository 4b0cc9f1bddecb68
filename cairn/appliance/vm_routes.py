"""REST endpoints of managed VMs (`cairn vm ...` and the web console call these).

All of them are admin-only. Refusals follow the API's rule: a 4xx with one line naming the
problem and the fix (404 no such VM or point, 409 a name clash, 400 anything else about the
request, including a cloud repository that cannot be reached or opened with the key given).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from cairn.virt.vms import VmManager, VmNameTaken, VmNotFound, VmRequest


class StartRequest(BaseModel):
    source: str = Field(max_length=300, description="point id, VOLUME@latest, or a kept clone")
    repo: str | None = Field(default=None, max_length=1000,
                             description="s3://BUCKET/PREFIX: a point of this cloud repository "
                                         "(default: the appliance's own)")
    name: str | None = Field(default=None, max_length=63)
    cpus: int = Field(default=2, ge=1, le=64)
    memory_mib: int = Field(default=2048, ge=64, le=1 << 20)
    networks: list[str] = Field(default_factory=list, max_length=8,
                                description="none, isolated:LAN (declared in /api/v1/lans), "
                                            "nat[,hostfwd=...], bridge:BR")
    firmware: Literal["auto", "bios", "uefi"] = "auto"
    disk_bus: Literal["auto", "virtio", "sata", "ide"] = "auto"
    key: str | None = Field(default=None, max_length=200,
                            description="the cloud repository's key, as the line of its key "
                                        "file (`cairn init` wrote it); default: the "
                                        "appliance's own, else this node's integrity key")
    endpoint: str | None = Field(default=None, max_length=300, pattern=r"^https?://",
                                 description="the cloud repository's S3 endpoint URL, kept "
                                             "with the VM for its runner, stop and restart "
                                             "(default: the appliance's profile of the "
                                             "repository, else its CAIRN_S3_ENDPOINT)")


class StopRequest(BaseModel):
    keep_as_point: bool = False
    discard: bool = False
    timeout: float = Field(default=30.0, ge=0, le=3600,
                           description="seconds to wait after the ACPI power button")


def vm_router(manager: VmManager, admin: Callable[..., None]) -> APIRouter:
    router = APIRouter(prefix="/api/v1/vms", tags=["vms"], dependencies=[Depends(admin)])

    def found(name: str) -> None:
        try:
            manager.get(name)
        except VmNotFound as exc:
            raise HTTPException(404, str(exc)) from None

    @router.get("")
    def list_vms() -> list[dict[str, Any]]:
        return [vm.to_json() for vm in manager.list()]

    @router.post("", status_code=201)
    def start_vm(body: StartRequest) -> dict[str, Any]:
        try:
            return manager.start(VmRequest(**body.model_dump())).to_json()
        except VmNameTaken as exc:
            raise HTTPException(409, str(exc)) from None

    @router.get("/{name}")
    def get_vm(name: str) -> dict[str, Any]:
        found(name)
        return manager.get(name).to_json()

    @router.get("/{name}/console")
    def console(name: str) -> dict[str, Any]:
        found(name)
        return dict(manager.console(name).__dict__)

    @router.post("/{name}/stop")
    def stop_vm(name: str, body: StopRequest) -> dict[str, Any]:
        found(name)
        stopped = manager.stop(name, body.keep_as_point, body.discard, body.timeout)
        return {"vm": stopped.vm.to_json(), "forced": stopped.forced, "point": stopped.point,
                "kept_clones": stopped.kept_clones}

    return router
