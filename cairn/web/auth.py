"""Logging in and out, and who may do what: the console's dependencies for every route.

Sessions live in a cookie that is ``Secure`` (the appliance speaks only HTTPS), ``HttpOnly``
(no script reads it) and ``SameSite=Strict``. Every state-changing request also carries the
session's CSRF token (a hidden form field, or the ``X-CSRF-Token`` header for scripts), and
the login form its own double-submit token. Failed logins are counted per client address
and per user name; past `LoginLimiter.attempts` in `LoginLimiter.window` seconds, logins
from there (or for that name) are refused until the window passes.
"""


import secrets
import threading
import time
from collections import deque
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from cairn import logs
from cairn.web.pages import Console, LoginRequired, PageRoute, Refused, render
from cairn.web.users import Session, Users, csrf_ok

COOKIE = "cairn_session"
LOGIN_COOKIE = "cairn_login"
WRONG = "Wrong user name, password or code."


class LoginLimiter:
    """Failed logins per key (address, user name) in a sliding window."""

    def __init__(self, attempts: int = 10, window: float = 900.0) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def wait(self, keys: list[str]) -> float:
        """Seconds until a login for ``keys`` is allowed again (0: allowed now)."""
        now = time.monotonic()
        longest = 0.0
        with self._lock:
            for key in keys:
                times = self._failures.get(key)
                while times and times[0] <= now - self.window:
                    times.popleft()
                if times and len(times) >= self.attempts:
                    longest = max(longest, times[0] + self.window - now)
        return longest

    def failed(self, keys: list[str]) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)


class Auth:
    """The dependencies routes declare: any user, an admin, an admin changing something,
    any user changing their own account."""

    def __init__(self, users: Users) -> None:
        self.users = users

    def session(self, request: Request) -> Session:
        token = request.cookies.get(COOKIE)
        session = self.users.session(token) if token else None
        if session is None:
            raise LoginRequired(expired=token is not None)
        request.state.session = session
        return session

    def admin(self, request: Request) -> Session:
        session = self.session(request)
        if not session.user.admin:
            raise Refused(403, f"{session.user.name} is a viewer: viewers see, browse and "
                               "download, and change nothing; ask an admin")
        return session

    async def change(self, request: Request) -> Session:
        """An admin's state-changing request with the session's CSRF token."""
        return await self._with_csrf(request, self.admin(request))

    async def own(self, request: Request) -> Session:
        """Any user changing their own account (their one-time code), with the CSRF token:
        a viewer changes nothing of the appliance, but guards their own login."""
        return await self._with_csrf(request, self.session(request))

    @staticmethod
    async def _with_csrf(request: Request, session: Session) -> Session:
        sent = request.headers.get("x-csrf-token")
        if sent is None:
            form = await request.form()
            value = form.get("csrf")
            sent = value if isinstance(value, str) else None
        if not csrf_ok(session, sent):
            raise Refused(403, "the form's security token is missing or stale: reload the "
                               "page and try again")
        return session


def _local(target: str | None) -> str:
    """Where to go after logging in: only a path on this site, never another site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def router(console: Console, auth: Auth, limiter: LoginLimiter) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)

    def login_form(request: Request, status: int = 200, message: str = "",
                   target: str = "/") -> HTMLResponse:
        token = secrets.token_urlsafe(24)
        page = render(request, "login.html", status, message=message, next=target,
                      login_token=token)
        page.set_cookie(LOGIN_COOKIE, token, secure=True, httponly=True, samesite="strict",
                        path="/login")
        return page

    @routes.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/", expired: bool = False) -> HTMLResponse:
        message = "Your session has expired: log in again." if expired else ""
        return login_form(request, message=message, target=_local(next))

    @routes.post("/login", response_class=HTMLResponse)
    def login(request: Request, username: Annotated[str, Form(max_length=200)],
              password: Annotated[str, Form(max_length=1000)],
              code: Annotated[str, Form(max_length=20)] = "",
              login_token: Annotated[str, Form(max_length=100)] = "",
              next: Annotated[str, Form(max_length=2000)] = "/") -> Response:
        target = _local(next)
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not secrets.compare_digest(  # bytes: str must be ASCII
                cookie.encode("utf-8", "surrogatepass"),
                login_token.encode("utf-8", "surrogatepass")):
            return login_form(request, 403, "The login form was stale: try again.", target)
        keys = [f"addr:{request.client.host if request.client else '-'}", f"user:{username}"]
        wait = limiter.wait(keys)
        if wait > 0:
            return login_form(request, 429, f"Too many failed logins: wait {wait / 60:.0f} "
                                            "min and try again.", target)
        user = console.users.authenticate(username, password, code)
        if user is None:
            limiter.failed(keys)
            logs.event("console.login_failed", user=username, addr=keys[0])
            return login_form(request, 401, WRONG, target)
        limiter.forget(keys[1])
        token, session = console.users.open_session(user)
        logs.event("console.login", user=user.name)
        answer = RedirectResponse(target, status_code=303)
        answer.set_cookie(COOKIE, token, secure=True, httponly=True, samesite="strict",
                          path="/", max_age=int(session.expires - time.time()))
        answer.delete_cookie(LOGIN_COOKIE, path="/login")
        return answer

    @routes.post("/logout")
    async def logout(request: Request) -> Response:
        session = auth.session(request)
        form = await request.form()
        value = form.get("csrf")
        if not csrf_ok(session, value if isinstance(value, str) else None):
            raise Refused(403, "the form's security token is stale: reload the page")
        console.users.close_session(request.cookies.get(COOKIE, ""))
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return answer

    return routes
