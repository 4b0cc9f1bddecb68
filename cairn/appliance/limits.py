"""Request bodies are bounded before anything buffers them, and before authentication.

FastAPI reads a JSON body before it runs the dependencies that check the token, and a
chunked body carries no ``Content-Length`` to refuse up front: without this layer anyone
could make the appliance hold hundreds of megabytes (a 256 MiB chunked ``POST /pair`` took
it from 67 MB to 594 MB resident). Each route has a cap; a caller whose bearer token is
unknown gets the small anonymous cap whatever the route. A declared length over the cap is
refused without reading a byte; a chunked body is counted as it arrives and refused the
moment it passes the cap (HTTP 413, one line naming the limit).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cairn.frames import MAX_FRAME

ANONYMOUS = 64 * 1024
DEFAULT = 1024 * 1024
UPLOAD_DATA = 4 * MAX_FRAME
COMMIT = 64 * 1024 * 1024

# (method, path pattern, cap in bytes); the first match wins, else DEFAULT.
ROUTES: tuple[tuple[str, re.Pattern[str], int], ...] = (
    ("POST", re.compile(r"^/api/v1/pair$"), 4096),
    ("PUT", re.compile(r"^/api/v1/agent/uploads/[^/]+/data$"), UPLOAD_DATA),
    ("POST", re.compile(r"^/api/v1/agent/uploads/[^/]+/commit$"), COMMIT),
)


class TooLarge(HTTPException):
    """Raised from ``receive`` so the app's own handlers answer 413 while it reads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(413, f"request body larger than {limit} bytes: send less per "
                              "request (and a valid token for uploads)")


def route_cap(method: str, path: str) -> int:
    for route_method, pattern, cap in ROUTES:
        if method == route_method and pattern.match(path):
            return cap
    return DEFAULT


class BodyLimit:
    """ASGI middleware: ``known(token)`` says whether a bearer token belongs to anyone.

    The token is looked up (in a worker thread) only once a body grows past the anonymous
    cap, so small requests cost nothing extra.
    """

    def __init__(self, app: ASGIApp, known: Callable[[str], bool]) -> None:
        self.app = app
        self.known = known

    async def cap(self, scope: Scope, size: int) -> int:
        """The cap that applies to a body of ``size`` bytes on this request."""
        cap = route_cap(scope["method"], scope["path"])
        if size <= min(cap, ANONYMOUS):
            return cap
        auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        token = auth[len("Bearer "):].strip() if auth.startswith("Bearer ") else ""
        if not token or not await run_in_threadpool(self.known, token):
            return min(cap, ANONYMOUS)
        return cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await refuse(send, ANONYMOUS)
            return
        if declared is not None and int(declared) > (cap := await self.cap(scope, int(declared))):
            await refuse(send, cap)
            return
        route = route_cap(scope["method"], scope["path"])
        received = 0
        checked: int | None = None
        started = False

        async def bounded_receive() -> Message:
            nonlocal received, checked
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if checked is None and received > min(route, ANONYMOUS):
                    checked = await self.cap(scope, received)
                if checked is not None and received > checked:
                    raise TooLarge(checked)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, watched_send)
        except TooLarge as exc:
            if started:
                raise
            await refuse(send, int(exc.limit))


async def refuse(send: Send, cap: int) -> None:
    body = ('{"detail": "' + TooLarge(cap).detail + '"}').encode()
    start: dict[str, Any] = {"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]}
    await send(start)
    await send({"type": "http.response.body", "body": body})
