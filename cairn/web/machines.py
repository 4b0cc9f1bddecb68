"""The dashboard (every machine at a glance) and a machine's page (its timeline of points)."""


from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from cairn.appliance.offsite_copies import OffsiteCopies
from cairn.web.auth import Auth
from cairn.web.overview import (
    find_machine,
    offsite_stored,
    open_alerts,
    repository,
    summaries,
    timeline,
)
from cairn.web.pages import Console, PageRoute, render
from cairn.web.users import Session

PAGE = 500
"""Points per page of a machine's timeline, newest first."""


def router(console: Console, auth: Auth) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Viewer = Annotated[Session, Depends(auth.session)]

    @routes.get("/", response_class=HTMLResponse)
    def dashboard(request: Request, _: Viewer) -> HTMLResponse:
        machines = summaries(console)
        counts = Counter(m.status for m in machines)
        return render(request, "dashboard.html", machines=machines, counts=counts,
                      stored=sum(m.stored_local for m in machines),
                      offsite=sum(1 for m in machines if m.offsite is not None),
                      stored_offsite=offsite_stored([m.offsite for m in machines if m.offsite]),
                      alerts=open_alerts(console))

    @routes.get("/machines/{name}", response_class=HTMLResponse)
    def machine(request: Request, name: str, _: Viewer,
                page: Annotated[int, Query(ge=1, le=1_000_000)] = 1) -> HTMLResponse:
        found = find_machine(console, name)
        summary = summaries(console, [found])[0]
        with repository(console) as repo:
            offsite = OffsiteCopies(console.state).points(found.id) if summary.offsite else []
            rows = timeline(repo, found.name, offsite)
        first = (page - 1) * PAGE
        return render(request, "machine.html", machine=found, summary=summary,
                      rows=rows[first:first + PAGE], total=len(rows), page=page, first=first,
                      per_page=PAGE, schedule=console.state.schedule(found.id))

    return routes
