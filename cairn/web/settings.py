"""Settings: the console's users (the same `Users` calls as `cairn users`), where alerts
go (the same `alerts.configure` calls as `cairn alerts set` and `cairn alerts test`), and
the space buttons (`web.space`) beside the cloud repositories the offsite policies name."""

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from cairn import logs
from cairn.alerts import AlertStore
from cairn.alerts.configure import ChannelCheck, send_test, set_channels
from cairn.alerts.settings import Settings
from cairn.appliance.space import targets
from cairn.web.auth import Auth
from cairn.web.pages import Console, PageRoute, Refused, render
from cairn.web.users import ROLES, Session


class AlertForm(BaseModel):
    """The alert channels form; an empty field is an unset setting."""

    webhook: str = Field(default="", max_length=2000)
    email: str = Field(default="", max_length=320)
    smtp: str = Field(default="", max_length=300)
    starttls: str = Field(default="", max_length=10)
    smtp_user: str = Field(default="", max_length=320)
    smtp_password: str = Field(default="", max_length=1000)
    sender: str = Field(default="", max_length=320)

    def settings(self, kept_password: str | None) -> Settings:
        """An empty password with a user name keeps the password already set (it is never
        shown back, so the form cannot hold it)."""
        user = _or_none(self.smtp_user)
        return Settings(_or_none(self.webhook), _or_none(self.email), _or_none(self.smtp),
                        bool(self.starttls), user,
                        (self.smtp_password or kept_password) if user else None,
                        _or_none(self.sender))


def _or_none(text: str) -> str | None:
    return text.strip() or None


def router(console: Console, auth: Auth) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Viewer = Annotated[Session, Depends(auth.session)]
    Change = Annotated[Session, Depends(auth.change)]

    def alerts() -> AlertStore:
        return AlertStore(console.repo_path / "appliance.db")

    def page(request: Request, warnings: list[str] | None = None,
             tested: list[ChannelCheck] | None = None) -> HTMLResponse:
        store = alerts()
        try:
            channels = Settings.from_dict(store.settings()).public()
            failing = store.failing()
        finally:
            store.close()
        return render(request, "settings.html", users=console.users.all_users(), roles=ROLES,
                      channels=channels, failing=failing, warnings=warnings or [],
                      tested=tested or [], clouds=targets(console.state))

    @routes.get("/settings", response_class=HTMLResponse)
    def settings(request: Request, _: Viewer) -> HTMLResponse:
        return page(request)

    @routes.post("/settings/alerts", response_class=HTMLResponse)
    def set_alerts(request: Request, session: Change,
                   form: Annotated[AlertForm, Form()]) -> HTMLResponse:
        store = alerts()
        try:
            kept = Settings.from_dict(store.settings()).smtp_password
            warnings = set_channels(store, form.settings(kept))
        finally:
            store.close()
        logs.event("console.alerts_set", by=session.user.name)
        return page(request, warnings=warnings)

    @routes.post("/settings/alerts/test", response_class=HTMLResponse)
    def test_alerts(request: Request, _: Change) -> HTMLResponse:
        store = alerts()
        try:
            tested = send_test(store)
        finally:
            store.close()
        return page(request, tested=tested)

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
