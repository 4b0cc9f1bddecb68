"""``/api/v1/alerts``: open (and past) alerts, where they go, and a test through every channel.

Admin only (the dependency is given where the router is included).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from cairn.alerts import Alert, AlertStore
from cairn.alerts.configure import send_test, set_channels
from cairn.alerts.settings import Settings


class AlertSettingsRequest(BaseModel):
    webhook: str | None = Field(default=None, max_length=2000)
    email: str | None = Field(default=None, max_length=320)
    smtp: str | None = Field(default=None, max_length=300, description="HOST:PORT")
    starttls: bool = False
    smtp_user: str | None = Field(default=None, max_length=320)
    smtp_password: str | None = Field(default=None, max_length=1000)
    sender: str | None = Field(default=None, max_length=320)


def alert_json(store: AlertStore, a: Alert) -> dict[str, Any]:
    return {"id": a.id, "kind": a.kind, "machine": a.machine or None,
            "subject": a.subject or None, "severity": a.severity, "message": a.message,
            "first_seen": a.first_seen, "last_seen": a.last_seen, "resolved": a.resolved,
            "deliveries": [{"event": d.event, "channel": d.channel, "sent": d.sent,
                            "attempts": d.attempts, "next_try": d.next_try, "error": d.error}
                           for d in store.deliveries(a.id)]}


def router(repo: Path) -> APIRouter:
    api = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
    store = AlertStore(repo / "appliance.db")

    @api.get("")
    def list_alerts(include_resolved: Annotated[bool, Query(alias="all")] = False
                    ) -> dict[str, Any]:
        """Open alerts (every alert with ``all``), and the channels failing to deliver."""
        failing = {}
        for d in store.failing():
            failing.setdefault(d.channel, {"channel": d.channel, "error": d.error,
                                           "attempts": d.attempts, "next_try": d.next_try,
                                           "pending": 0})["pending"] += 1
        return {"alerts": [alert_json(store, a) for a in store.alerts(include_resolved)],
                "failing_channels": list(failing.values()),
                "channels": store.channels()}

    @api.get("/settings")
    def get_settings() -> dict[str, Any]:
        return Settings.from_dict(store.settings()).public()

    @api.put("/settings")
    def put_settings(body: AlertSettingsRequest) -> dict[str, Any]:
        settings = Settings(**body.model_dump())
        warnings = set_channels(store, settings)
        return {"settings": settings.public(), "warnings": warnings}

    @api.post("/test")
    def test_alert() -> dict[str, Any]:
        """Send a test message through every channel now; each channel's outcome."""
        return {"results": [asdict(r) for r in send_test(store)]}

    return api
