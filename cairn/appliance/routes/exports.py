"""``/api/v1/exports``: diskless restore through the API, the `cairn export` the CLI runs,
owned by the appliance (`cairn.ops.exports`).

Admin only (the dependency is given where the router is included). An unknown export or
point is 404 (a `NotKnown`, as in the console), a port in use 409, anything else wrong with
the request 400 (a TLS mode other than cert or psk is refused by the schema, 422).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cairn import logs
from cairn.ops.exports import ExportManager, ExportStart


class NewExport(BaseModel):
    target: str = Field(min_length=1, max_length=300,
                        description="point id, VOLUME@latest, machine point, or clone name")
    host: str = Field(default="127.0.0.1", max_length=253, pattern=r"^[A-Za-z0-9.:_-]+$",
                      description="address to listen on")
    port: int = Field(default=0, ge=0, le=65535, description="0: a free one")
    tls: Literal["cert", "psk"] = Field(
        default="cert", description="cert: clients use the appliance's certificate as their "
                                    "CA; psk: a key made for this export (GET .../key)")
    writable: bool = Field(default=False, description="a clone takes writes (never a point)")


def router(repo_path: Path) -> APIRouter:
    manager = ExportManager(repo_path)
    api = APIRouter(prefix="/api/v1/exports", tags=["exports"])

    @api.get("")
    def list_exports() -> list[dict[str, Any]]:
        return [one.to_json() for one in manager.list()]

    @api.post("", status_code=201)
    def start_export(body: NewExport) -> dict[str, Any]:
        started = manager.start(ExportStart(**body.model_dump()))
        logs.event("export.started", export=started.id, target=started.target,
                   port=started.port, tls=started.tls)
        return started.to_json()

    @api.get("/{export_id}")
    def get_export(export_id: str) -> dict[str, Any]:
        return manager.get(export_id).to_json()

    @api.get("/{export_id}/key")
    def psk_key(export_id: str) -> dict[str, str]:
        """The line a psk export's clients put in their key file (``tls-psk-file=``)."""
        return {"psk_file_line": manager.key(export_id)}

    @api.delete("/{export_id}")
    def stop_export(export_id: str, keep_as_point: bool = False) -> dict[str, Any]:
        """``keep_as_point``: what clients wrote to a writable clone export becomes the
        newest point of its volume (``point`` in the answer), as a VM's stop keeps it."""
        stopped = manager.stop(export_id, keep_as_point)
        logs.event("export.stopped", export=export_id, point=stopped.point)
        return stopped.to_json()

    return api
