"""Settings: the console's users (the same `Users` calls as `cairn users`) and where alerts
go (shown here; set with `cairn alerts set`, which checks the servers it names)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cairn import logs
from cairn.alerts import AlertStore
from cairn.alerts.settings import Settings
from cairn.web.auth import Auth
from cairn.web.pages import Console, PageRoute, Refused, render
from cairn.web.users import ROLES, Session


def router(console: Console, auth: Auth) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Viewer = Annotated[Session, Depends(auth.session)]
    Change = Annotated[Session, Depends(auth.change)]

    @routes.get("/settings", response_class=HTMLResponse)
    def settings(request: Request, _: Viewer) -> HTMLResponse:
        store = AlertStore(console.repo_path / "appliance.db")
        try:
            channels = Settings.from_dict(store.settings()).public()
            failing = store.failing()
        finally:
            store.close()
        return render(request, "settings.html", users=console.users.all_users(), roles=ROLES,
                      channels=channels, failing=failing)

    @routes.post("/settings/users")
    def add_user(session: Change, username: Annotated[str, Form(max_length=200)],
                 role: Annotated[str, Form(max_length=20)],
                 password: Annotated[str, Form(max_length=1000)]) -> RedirectResponse:
        console.users.add(username, role, password)
        logs.event("console.user_added", user=username, role=role, by=session.user.name)
        return RedirectResponse("/settings", status_code=303)

    @routes.post("/settings/users/{name}/remove")
    def remove_user(name: str, session: Change) -> RedirectResponse:
        if name == session.user.name:
            raise Refused(400, "you cannot remove yourself: ask another admin, or use "
                               "`cairn users rm` on the appliance host")
        console.users.remove(name)
        logs.event("console.user_removed", user=name, by=session.user.name)
        return RedirectResponse("/settings", status_code=303)

    return routes
