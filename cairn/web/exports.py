"""The console's page of diskless exports: the NBD exports the appliance serves, starting
one of a point or a clone (TLS with the appliance's certificate or a pre-shared key,
read-only or writable), its URL and key to hand to the machine that boots from it, and
stopping one, keeping what a writable clone's clients wrote as a point.

The same `ExportManager` as the REST API's ``/api/v1/exports`` and `cairn exports`
(`cairn.ops.exports`): the same checks (a point is never writable, a clone has one writer,
a port in use is refused), the same processes, listed by `cairn exports`. A refusal is one
line on this page, with what was chosen kept. Admins only: the page shows keys.
"""

import contextlib
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from cairn import logs
from cairn.errors import CairnError, UsageError
from cairn.ops.exports import ExportManager, ExportStart, OwnedExport
from cairn.store import marks
from cairn.web.auth import Auth
from cairn.web.overview import repository
from cairn.web.pages import Console, PageRoute, render, status_of
from cairn.web.users import Session


class ExportForm(BaseModel):
    """What to serve and how, as `cairn exports start` takes it."""

    target: str = Field(default="", max_length=300)
    tls: Literal["cert", "psk"] = "cert"
    writable: bool = False
    host: str = Field(default="127.0.0.1", max_length=253)
    port: int = Field(default=0, ge=0, le=65535)


class StopForm(BaseModel):
    keep_as_point: bool = False


def router(console: Console, auth: Auth) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Admin = Annotated[Session, Depends(auth.admin)]
    Change = Annotated[Session, Depends(auth.change)]
    manager = ExportManager(console.repo_path)

    def page(request: Request, form: ExportForm, message: str | None = None,
             error: CairnError | None = None) -> HTMLResponse:
        with repository(console) as repo:
            points = sorted(marks.live_points(repo, None), key=lambda p: -p.created)
            clones = [name for name, _point, _created in repo.catalog.clones()]
        exports = sorted(manager.list(), key=lambda one: -one.created)
        return render(request, "exports.html", 200 if error is None else status_of(error),
                      exports=exports, keys=_keys(manager, exports), points=points,
                      clones=clones, form=form, message=message,
                      error=str(error) if error else None)

    @routes.get("/exports", response_class=HTMLResponse)
    def show(request: Request, _: Admin, target: str = "") -> HTMLResponse:
        """The page; ``target`` (a point page's link): chosen in the start form."""
        return page(request, ExportForm(target=target[:300]))

    @routes.post("/exports/start", response_class=HTMLResponse)
    def start(request: Request, session: Change,
              form: Annotated[ExportForm, Form()]) -> HTMLResponse:
        """Start the export (this waits until it serves) and show its URL and key."""
        try:
            started = manager.start(ExportStart(form.target, form.host.strip(), form.port,
                                                form.tls, form.writable))
        except CairnError as exc:
            return page(request, form, error=exc)
        logs.event("console.export_started", export=started.id, target=started.target,
                   tls=started.tls, user=session.user.name)
        return page(request, ExportForm(), f"export {started.id} of {started.target} serves "
                                           f"at {started.url}")

    @routes.post("/exports/{export_id}/stop", response_class=HTMLResponse)
    def stop(request: Request, export_id: str, session: Change,
             form: Annotated[StopForm, Form()]) -> HTMLResponse:
        try:
            stopped = manager.stop(export_id, form.keep_as_point)
        except CairnError as exc:
            return page(request, ExportForm(), error=exc)
        logs.event("console.export_stopped", export=export_id, point=stopped.point,
                   user=session.user.name)
        kept = f"; what its clients wrote is point {stopped.point}" if stopped.point else ""
        return page(request, ExportForm(), f"export {export_id} stopped{kept}")

    return routes


def _keys(manager: ExportManager, exports: list[OwnedExport]) -> dict[str, str]:
    """The key file line of each running psk export, shown beside its URL. One that died
    since it was listed has lost its key (`ExportManager.key` refuses): it shows none."""
    keys = {}
    for one in exports:
        if one.tls == "psk" and one.state == "running":
            with contextlib.suppress(UsageError):
                keys[one.id] = manager.key(one.id)
    return keys
