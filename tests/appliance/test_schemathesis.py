"""Schemathesis against the appliance's own OpenAPI document: no input gives a 500.

Every operation is called with generated requests as the admin over the real HTTPS
listener; no response may be a server error. Operations anyone may call (``/healthz``,
``/pair``) are called without a token as well. The routes anyone reaches that the API's
document leaves out (the console's ``/login`` and ``/logout``, the docs' assets) get a
document of their own, built from those routes, and are called without a token or
session; a POST ``/login`` carries the login cookie its form gave, so generated logins
get past the form's token to the limiter and the password check. (Schemathesis's pytest
plugin does not run under pytest 9, so its strategies are driven with Hypothesis
directly.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import schemathesis
from fastapi.openapi.utils import get_openapi
from hypothesis import HealthCheck, given, settings

from cairn.appliance.routes import docs
from cairn.web import auth
from tests.appliance.harness import Appliance

TOKEN = "admin_schemathesis-environment-token"
EXAMPLES = 25


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    appliance = Appliance(tmp_path_factory.mktemp("schemathesis"))
    # An environment token: generated calls may rotate the admin-token file's token or
    # revoke added ones, and must not lock the rest of the run out.
    appliance.env = {"CAIRN_ADMIN_TOKEN": TOKEN}
    appliance.start()
    try:
        yield appliance
    finally:
        appliance.stop()


def unlisted_open_routes() -> dict[str, Any]:
    """An OpenAPI document of the routes that answer without a token or session but are
    left out of the API's own document (pages, not API)."""
    routes = []
    for route in [*auth.router(None, None, auth.LoginLimiter()).routes,  # type: ignore[arg-type]
                  *docs.router.routes]:
        route = copy.copy(route)
        route.include_in_schema = True  # type: ignore[attr-defined]
        routes.append(route)
    return get_openapi(title="unlisted", version="1", routes=routes)


def fuzz(operation: Any, send: Callable[[schemathesis.Case], requests.Response],
         failures: list[str], examples: int = EXAMPLES) -> set[int]:
    """Call ``operation`` with generated requests; note any server error. Returns the
    statuses seen."""
    seen: set[int] = set()

    @given(case=operation.as_strategy())
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def call(case: schemathesis.Case) -> None:
        response = send(case)
        seen.add(response.status_code)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path}: "
                            f"{response.status_code} {response.text[:200]}")

    call()
    return seen


def test_no_request_makes_the_appliance_fail(live: Appliance) -> None:
    with live.admin() as client:
        document = client.json("GET", "/openapi.json")
    operations = [r.ok() for r in schemathesis.openapi.from_dict(document).get_all_operations()]
    unlisted = [r.ok() for r in schemathesis.openapi.from_dict(
        unlisted_open_routes()).get_all_operations()]
    assert len(operations) >= 10
    assert {(o.method.upper(), o.path) for o in unlisted} >= {("GET", "/login"),
                                                              ("POST", "/login")}
    failures: list[str] = []
    with requests.Session() as session:  # one TLS connection, not one per call
        pem = str(live.repo / "tls" / "cert.pem")

        def as_admin(case: schemathesis.Case) -> requests.Response:
            return case.call(base_url=live.url, session=session, verify=pem,
                             headers={"Authorization": f"Bearer {TOKEN}"})

        def anonymous(case: schemathesis.Case) -> requests.Response:
            session.cookies.clear()
            return case.call(base_url=live.url, session=session, verify=pem)

        form = session.get(f"{live.url}/login", verify=pem)
        login_cookie = form.cookies[auth.LOGIN_COOKIE]

        def logging_in(case: schemathesis.Case) -> requests.Response:
            session.cookies.clear()
            if isinstance(case.body, dict) and len(str(case.body)) % 2:
                case.body["login_token"] = login_cookie
            return case.call(base_url=live.url, session=session, verify=pem,
                             cookies={auth.LOGIN_COOKIE: login_cookie})

        for operation in operations:
            fuzz(operation, as_admin, failures)
            if fuzz(operation, anonymous, failures, examples=1) != {401}:  # open to all
                fuzz(operation, anonymous, failures)
        for operation in unlisted:
            fuzz(operation, logging_in if operation.path == "/login" and
                 operation.method.upper() == "POST" else anonymous, failures)
    assert not failures, failures[:10]
