"""The settings page's space buttons: prune a cloud repository (or preview what a prune
would free), convert a legacy one into packs, repack the local repository. Each starts the
same task as the API (`appliance.space`) and leads to the jobs page, which follows it."""

from typing import Annotated

from fastapi import APIRouter, Depends, Form
from fastapi.responses import RedirectResponse

from cairn.appliance.space import Space
from cairn.web.auth import Auth
from cairn.web.pages import Console, PageRoute
from cairn.web.users import Session

Target = Annotated[str, Form(max_length=1000)]


def router(console: Console, auth: Auth) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Change = Annotated[Session, Depends(auth.change)]
    space = Space(console.repo_path, console.state, console.tasks)

    def to_jobs() -> RedirectResponse:
        return RedirectResponse("/jobs", status_code=303)

    @routes.post("/settings/space/prune")
    def prune(session: Change, to: Target,
              dry_run: Annotated[str, Form(max_length=10)] = "") -> RedirectResponse:
        space.prune(to, bool(dry_run), session.user.name)
        return to_jobs()

    @routes.post("/settings/space/convert")
    def convert(session: Change, to: Target) -> RedirectResponse:
        space.convert(to, session.user.name)
        return to_jobs()

    @routes.post("/settings/space/repack")
    def repack(session: Change,
               dry_run: Annotated[str, Form(max_length=10)] = "") -> RedirectResponse:
        space.repack(None, bool(dry_run), session.user.name)
        return to_jobs()

    return routes
