"""A user's one-time code (TOTP), set up and turned off from the console.

Any user guards their own login, viewers included (it changes nothing of the appliance).
Setting up shows a fresh secret as a QR code and as text; it is kept only when the user
types a code their authenticator made from it, so a failed scan never locks anyone out.
Turning it off takes a current code, so a session left open cannot remove it; an admin can
reset another user's (a lost phone), as `cairn users` on the host can.
"""

import base64
from typing import Annotated

import qrcode
import qrcode.image.svg
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cairn import logs
from cairn.web.auth import Auth
from cairn.web.pages import Console, PageRoute, render
from cairn.web.users import Session, new_totp_secret, totp_uri

Code = Annotated[str, Form(max_length=20)]


def qr_data_uri(text: str) -> str:
    """``text`` as a QR code, an SVG ``data:`` address for an ``<img>`` (no file, no
    request, nothing to cache)."""
    svg = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage).to_string()
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode()


def router(console: Console, auth: Auth) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Viewer = Annotated[Session, Depends(auth.session)]
    Own = Annotated[Session, Depends(auth.own)]
    Change = Annotated[Session, Depends(auth.change)]

    @routes.get("/settings/totp", response_class=HTMLResponse)
    def setup(request: Request, session: Viewer) -> HTMLResponse:
        if session.user.totp:
            return render(request, "totp.html", enrolled=True)
        secret = new_totp_secret()
        uri = totp_uri(session.user.name, secret)
        return render(request, "totp.html", enrolled=False, secret=secret, uri=uri,
                      qr=qr_data_uri(uri))

    @routes.post("/settings/totp")
    def enrol(session: Own, secret: Annotated[str, Form(max_length=100)],
              code: Code) -> RedirectResponse:
        console.users.enrol_totp(session.user.name, secret, code)
        logs.event("console.totp_on", user=session.user.name)
        return RedirectResponse("/settings", status_code=303)

    @routes.post("/settings/totp/off")
    def turn_off(session: Own, code: Code) -> RedirectResponse:
        console.users.drop_totp(session.user.name, code)
        logs.event("console.totp_off", user=session.user.name)
        return RedirectResponse("/settings", status_code=303)

    @routes.post("/settings/users/{name}/totp/reset")
    def reset(name: str, session: Change) -> RedirectResponse:
        console.users.drop_totp(name)
        logs.event("console.totp_reset", user=name, by=session.user.name)
        return RedirectResponse("/settings", status_code=303)

    return routes
