"""How the API answers an error: one JSON line ``{"detail": ...}`` and the right status.

The store's own errors (`cairn.errors`) map to statuses here, beside three that only the
API raises (`Forbidden`, `NotFound`, `Conflict`). A request's fault is a 4xx (counted in
``cairn_http_client_errors_total``); a `CairnError` that is not is 503 when trying again
may help, else 500, which always means a bug worth reporting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from cairn import logs
from cairn.appliance import metrics
from cairn.errors import (
    CairnError,
    InUse,
    Locked,
    NotKnown,
    PointLocked,
    UnknownPoint,
    UsageError,
)


class Forbidden(Exception):
    """The token is valid but this object belongs to another machine (HTTP 403)."""


class NotFound(Exception):
    """No such object (HTTP 404)."""


class Conflict(Exception):
    """The request is valid but the object's state does not allow it now (HTTP 409)."""


STATUS: tuple[tuple[type[Exception], int], ...] = (
    (NotKnown, 404), (UsageError, 400), (Forbidden, 403), (NotFound, 404), (Locked, 409),
    (InUse, 409), (Conflict, 409), (UnknownPoint, 404), (PointLocked, 409))


def client_error(status: int, message: str) -> JSONResponse:
    metrics.add("cairn_http_client_errors_total")
    return JSONResponse({"detail": message}, status_code=status)


def _answer(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handler(_: Request, exc: Exception) -> JSONResponse:
        return client_error(status, str(exc))
    return handler


async def _cairn(_: Request, exc: Exception) -> JSONResponse:
    """Not the request's fault: 503 when trying again may help, else 500."""
    logs.event("request.failed", error=str(exc))
    retryable = isinstance(exc, CairnError) and exc.retryable
    return JSONResponse({"detail": str(exc)}, status_code=503 if retryable else 500)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return client_error(422, f"invalid request: {where}: {first.get('msg', 'malformed')}")


def install(app: FastAPI) -> None:
    for error, status in STATUS:
        app.add_exception_handler(error, _answer(status))
    app.add_exception_handler(CairnError, _cairn)
    app.add_exception_handler(RequestValidationError, _invalid)
