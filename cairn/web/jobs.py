"""The jobs page: backups the appliance ran (history and errors), what the console started
(boot checks, virtual machines), and live progress of what runs now (server-sent events)."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from cairn.appliance.tasks import Task
from cairn.units import human_bytes
from cairn.virt.vms import VmManager
from cairn.web.auth import Auth
from cairn.web.pages import Console, PageRoute, render
from cairn.web.users import Session
from cairn.web.vms import running

HISTORY = 200
TICK = 1.0
KEEPALIVE = 15.0


def live(console: Console, vms: VmManager) -> list[dict[str, Any]]:
    """What is running now, as the page's live table shows it."""
    rows: list[dict[str, Any]] = [
        {"id": f"job-{j.id}", "what": f"backup of {j.machine} ({j.reason})",
         "state": j.state, "bytes": j.bytes_sent, "seconds": j.seconds}
        for j in console.state.jobs(limit=HISTORY) if j.active]
    rows += [{"id": f"task-{t.id}", "what": f"{t.kind} of {t.subject}{_step(t)}",
              "state": t.state, "bytes": None, "seconds": None}
             for t in console.tasks.recent() if t.state == "running"]
    rows += [{"id": f"vm-{v.name}", "what": f"virtual machine {v.name} of {v.point}",
              "state": v.state, "bytes": None, "seconds": None} for v in running(vms)]
    return rows


def _step(task: Task) -> str:
    """What a task says it is doing: ``(3 of 7 packs condemned)``, bytes in units."""
    if not task.step:
        return ""
    if not task.total:
        return f" ({task.step})"
    if task.unit == "bytes":
        return f" ({human_bytes(task.done)} of {human_bytes(task.total)} of {task.step})"
    return f" ({task.done} of {task.total} {task.step})"


def router(console: Console, auth: Auth, vms: VmManager) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Viewer = Annotated[Session, Depends(auth.session)]

    @routes.get("/jobs", response_class=HTMLResponse)
    def jobs(request: Request, _: Viewer) -> HTMLResponse:
        history = list(reversed(console.state.jobs(limit=HISTORY)))
        return render(request, "jobs.html", live=live(console, vms), jobs=history,
                      tasks=console.tasks.recent(), vms=running(vms))

    @routes.get("/jobs/events")
    async def events(request: Request, _: Viewer) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            last, quiet = None, 0.0
            while not await request.is_disconnected():
                now = json.dumps(live(console, vms))
                if now != last:
                    last, quiet = now, 0.0
                    yield f"event: live\ndata: {now}\n\n"
                elif quiet >= KEEPALIVE:
                    quiet = 0.0
                    yield ": keepalive\n\n"
                await asyncio.sleep(TICK)
                quiet += TICK

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    return routes
