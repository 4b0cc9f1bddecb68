"""What every console page shares: the context, templates, and errors shown as pages.

A console route never answers with a traceback or a JSON error: `PageRoute` turns whatever
its handler raises into a page that names the problem (a missing point is a 404 page that
says so, a viewer's change a 403 page, a lapsed session a trip to the login page).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, PackageLoader, select_autoescape

from cairn import logs
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.errors import STATUS, Conflict, Forbidden, NotFound
from cairn.appliance.state import State
from cairn.appliance.tasks import Tasks
from cairn.errors import CairnError, PathNotFound, UnknownPartition, UnknownPoint, UnknownVolume
from cairn.web.users import Users

STATIC = Path(__file__).parent / "static"


@dataclass
class Console:
    """Everything a console route needs, made once when the app is built."""

    repo_path: Path
    state: State
    config: ApplianceConfig
    users: Users
    tasks: Tasks = field(default_factory=Tasks)


class LoginRequired(Exception):
    """No live session: go to the login page (``expired`` when a session cookie lapsed)."""

    def __init__(self, expired: bool) -> None:
        super().__init__("log in first")
        self.expired = expired


class Refused(Exception):
    """A request the console answers with an error page and ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# The API's statuses (`cairn.appliance.errors.STATUS`), with what a page names by a link
# first: UnknownPoint is a UsageError, but a page of a missing thing is a 404.
STATUSES: tuple[tuple[type[Exception], int], ...] = (
    (UnknownPoint, 404), (UnknownVolume, 404), (PathNotFound, 404), (UnknownPartition, 404),
    *STATUS,
)

TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 409: "Busy",
          429: "Too many attempts", 500: "Something failed", 503: "Try again"}


def _bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _ago(ts: float | None) -> str:
    if not ts:
        return "never"
    seconds = time.time() - ts
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if abs(seconds) >= size:
            return f"{seconds / size:.0f} {unit} ago" if seconds > 0 else \
                f"in {-seconds / size:.0f} {unit}"
    return "just now" if seconds >= 0 else "in under a minute"


TEMPLATES = Environment(loader=PackageLoader("cairn.web"), autoescape=select_autoescape(),
                        trim_blocks=True, lstrip_blocks=True, auto_reload=False)
TEMPLATES.filters.update(bytes=_bytes, when=_when, ago=_ago, q=lambda s: quote(str(s), safe=""))


def render(request: Request, template: str, code: int = 200, **values: Any) -> HTMLResponse:
    session = getattr(request.state, "session", None)
    html = TEMPLATES.get_template(template).render(
        session=session, user=session.user if session else None,
        csrf=session.csrf if session else "", path=request.url.path, **values)
    return HTMLResponse(html, status_code=code)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, "error.html", status, title=TITLES.get(status, "Error"),
                  message=message, status=status)


def status_of(exc: Exception) -> int:
    for kind, status in STATUSES:
        if isinstance(exc, kind):
            return status
    if isinstance(exc, CairnError):
        return 503 if exc.retryable else 500
    return 500


class PageRoute(APIRoute):
    """A route whose errors are pages: login redirect, 4xx with the reason, 500 without.

    Every answer says how long the server took (``Server-Timing: app;dur=MS``), which is
    what the console's speed targets are about and what `bench/console_bench.py` reads.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            started = time.perf_counter()
            answer = await _answer(request)
            answer.headers["Server-Timing"] = \
                f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
            return answer

        async def _answer(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                target = quote(request.url.path + (f"?{request.url.query}"
                                                   if request.url.query else ""), safe="")
                flag = "&expired=1" if exc.expired else ""
                return RedirectResponse(f"/login?next={target}{flag}", status_code=303)
            except Refused as exc:
                return error_page(request, exc.status, str(exc))
            except HTTPException as exc:
                return error_page(request, exc.status_code, str(exc.detail))
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                where = ".".join(str(p) for p in first.get("loc", ()))
                return error_page(request, 400, f"invalid request: {where}: "
                                                f"{first.get('msg', 'malformed')}")
            except (CairnError, NotFound, Forbidden, Conflict) as exc:
                status = status_of(exc)
                if status >= 500:
                    logs.event("console.failed", path=request.url.path, error=str(exc))
                return error_page(request, status, str(exc))

        return page
