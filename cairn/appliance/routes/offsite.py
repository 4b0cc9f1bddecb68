"""``/api/v1/offsite`` and ``/api/v1/machines/{name}/offsite``: offsite policies (admin only).

Setting a policy checks everything first (interval, send, retention, bandwidth, window,
that the cloud repository opens, creating it when the bucket holds none, and with
``immutable`` that the bucket really refuses to delete a locked object), so a bad policy
changes nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from cairn import logs
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.errors import NotFound
from cairn.appliance.offsite import OffsiteSettings, OffsiteTable
from cairn.appliance.scheduler import parse_every
from cairn.appliance.state import Machine, State
from cairn.appliance.window import parse_window
from cairn.errors import UsageError
from cairn.ops.offsite import make_immutable, open_target
from cairn.replication.replicate import parse_rate
from cairn.replication.selection import check_send
from cairn.store.marks import parse_duration
from cairn.store.retention import Policy


class OffsiteRequest(BaseModel):
    to: str = Field(max_length=1000, description="s3://BUCKET/PREFIX")
    endpoint: str | None = Field(default=None, max_length=1000)
    every: str = Field(default="1h", max_length=40, description="interval like 1h, 1d")
    send: str = Field(default="all", description="all, hourly or daily")
    retention: str | None = Field(default=None, max_length=400,
                                  description='the cloud\'s own, e.g. "daily=90,monthly=0"')
    bandwidth: str | None = Field(default=None, max_length=40, description="e.g. 50M")
    window: str | None = Field(default=None, max_length=20, description="e.g. 22:00-06:00")
    immutable: str | None = Field(default=None, max_length=40,
                                  description="keep each point sent under S3 Object Lock this "
                                              "long, e.g. 30d (the bucket must enforce it)")


def checked(repo: Path, body: OffsiteRequest, config: ApplianceConfig
            ) -> tuple[OffsiteSettings, list[str]]:
    """The settings ``body`` asks for, once every one is valid and the cloud repository
    opens (and, when immutable, has proved it enforces Object Lock); and what the user
    should know about the bucket (its lifecycle rule), to show beside the policy."""
    if not body.to.startswith("s3://"):
        raise UsageError(f"--to {body.to!r} is not a cloud repository: give s3://BUCKET/PREFIX")
    every = parse_every(body.every, config.min_interval_seconds)
    send = check_send(body.send)
    if body.retention is not None and Policy.parse(body.retention).empty:
        raise UsageError("retention names no rule: e.g. daily=90,monthly=0")
    bandwidth = parse_rate(body.bandwidth)
    if body.window is not None:
        parse_window(body.window)
    immutable = parse_duration(body.immutable) if body.immutable else None
    warnings = []
    with open_target(repo, body.to, body.endpoint) as cloud:
        if immutable:
            advice = make_immutable(cloud, immutable)  # refused unless the bucket enforces it
            if advice is not None:
                logs.event("offsite.lifecycle_advice", level=logging.WARNING, advice=advice)
                warnings.append(advice)
    return OffsiteSettings(body.to, body.endpoint, every, send, body.retention, bandwidth,
                           body.window, immutable), warnings


def router(repo: Path, state: State, config: ApplianceConfig) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["offsite"])
    table = OffsiteTable(state)

    def machine(name: str) -> Machine:
        found = state.machine(name)
        if found is None:
            raise NotFound(f"no machine {name!r}: `cairn machines` lists them")
        return found

    @api.get("/offsite")
    def list_offsite() -> list[dict[str, Any]]:
        return [p.json() for p in table.policies()]

    @api.put("/machines/{name}/offsite")
    def set_offsite(name: str, body: OffsiteRequest) -> dict[str, Any]:
        m = machine(name)
        settings, warnings = checked(repo, body, config)
        table.set(m.id, settings)
        logs.event("offsite.set", machine=name, target=body.to, every=settings.every,
                   send=settings.send, retention=body.retention, window=body.window,
                   immutable=settings.immutable)
        return {**table.policies(m.id)[0].json(), "warnings": warnings}

    @api.delete("/machines/{name}/offsite", status_code=204)
    def remove_offsite(name: str) -> Response:
        if not table.remove(machine(name).id):
            raise NotFound(f"{name} has no offsite policy")
        return Response(status_code=204)

    @api.post("/machines/{name}/offsite/run", status_code=202)
    def run_offsite(name: str) -> dict[str, Any]:
        """Replicate now (outside the window too); the outcome shows in ``GET /offsite``."""
        m = machine(name)
        if not table.policies(m.id):
            raise NotFound(f"{name} has no offsite policy: `cairn offsite set {name} --to ...`")
        return {"machine": name, "queued": True, "asked": table.force(m.id)}

    return api
