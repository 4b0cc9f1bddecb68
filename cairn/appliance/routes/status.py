"""Health for load balancers and systemd (open), metrics for Prometheus (with a token)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from cairn import __version__
from cairn.appliance import metrics
from cairn.appliance.auth import ScraperOnly
from cairn.appliance.context import Ctx

router = APIRouter(tags=["status"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/metrics", response_class=PlainTextResponse, dependencies=[ScraperOnly])
def prometheus(ctx: Ctx) -> str:
    return metrics.render(ctx.state, ctx.config.offline_after_seconds)
