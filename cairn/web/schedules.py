"""A machine's schedule and retention, edited with a preview of the points the new policy
would remove before anything is saved (`cairn.ops.schedules`), then saved as the REST API
does (`cairn.appliance.scheduler.set_schedule`)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cairn.appliance import scheduler
from cairn.ops import schedules
from cairn.store.retention import Policy
from cairn.web.auth import Auth
from cairn.web.overview import find_machine, machine_volumes, repository
from cairn.web.pages import Console, PageRoute, render
from cairn.web.users import Session

Text = Annotated[str, Query(max_length=200)]


def _form_value(value: float | str | None) -> str:
    if value is None:
        return ""
    return f"{value:g}s" if isinstance(value, float) else str(value)


def router(console: Console, auth: Auth) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Admin = Annotated[Session, Depends(auth.admin)]
    Change = Annotated[Session, Depends(auth.change)]

    @routes.get("/machines/{name}/schedule", response_class=HTMLResponse)
    def edit(request: Request, name: str, _: Admin, every: Text | None = None,
             cron: Text | None = None, retention: Text | None = None) -> HTMLResponse:
        machine = find_machine(console, name)
        current = console.state.schedule(machine.id)
        asked = any(v is not None for v in (every, cron, retention))
        if not asked and current is not None:
            every, cron = _form_value(current.every), current.cron or ""
            retention = current.retention or ""
        fates = None
        if asked and retention:
            with repository(console) as repo:
                volumes = machine_volumes(machine.name, [v.name for v in repo.catalog.volumes()])
                fates = schedules.preview(repo, volumes, Policy.parse(retention))
        return render(request, "schedule.html", machine=machine, every=every or "",
                      cron=cron or "", retention=retention or "", fates=fates,
                      doomed=sum(1 for f in fates or [] if not f.kept_by))

    @routes.post("/machines/{name}/schedule")
    def save(name: str, _: Change, every: Annotated[str, Form(max_length=200)] = "",
             cron: Annotated[str, Form(max_length=200)] = "",
             retention: Annotated[str, Form(max_length=200)] = "") -> RedirectResponse:
        machine = find_machine(console, name)
        scheduler.set_schedule(console.state, console.config, machine, every.strip() or None,
                               cron.strip() or None, retention.strip() or None)
        return RedirectResponse(f"/machines/{machine.name}", status_code=303)

    return routes
