"""Schemathesis against the appliance's own OpenAPI document: no input gives a 500.

Every operation is called with generated requests as the admin over the real HTTPS
listener; no response may be a server error. (Schemathesis's pytest plugin does not run
under pytest 9, so its strategies are driven with Hypothesis directly.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.appliance.harness import Appliance

TOKEN = "admin_schemathesis-environment-token"


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


def test_no_request_makes_the_appliance_fail(live: Appliance) -> None:
    with live.admin() as client:
        document = client.json("GET", "/openapi.json")
    schema = schemathesis.openapi.from_dict(document)
    pem = str(live.repo / "tls" / "cert.pem")
    token = TOKEN
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case) -> None:
            response = case.call(base_url=live.url, verify=pem,
                                 headers={"Authorization": f"Bearer {token}"})
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: "
                                f"{response.status_code} {response.text[:200]}")

        call()
    assert not failures, failures[:10]
