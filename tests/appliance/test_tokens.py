"""Admin tokens are listed, added, revoked and rotated; an environment token dies with its
variable; ``/metrics`` needs a token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cairn.errors import ApplianceRefused
from tests.appliance.harness import Appliance, cairn


def refused(appliance: Appliance, token: str | None, path: str = "/api/v1/machines") -> int:
    with appliance.client(token) as c, pytest.raises(ApplianceRefused) as err:
        c.request("GET", path)
    return err.value.status


def works(appliance: Appliance, token: str, path: str = "/api/v1/machines") -> bool:
    with appliance.client(token) as c:
        return c.request("GET", path).status_code == 200


def test_environment_token_lives_as_long_as_the_variable(tmp_path: Path) -> None:
    appliance = Appliance(tmp_path)
    appliance.env = {"CAIRN_ADMIN_TOKEN": "admin_from-the-environment-123"}
    try:
        appliance.start()
        assert works(appliance, "admin_from-the-environment-123")
        appliance.stop()
        appliance.env = {}
        appliance.start()
        assert refused(appliance, "admin_from-the-environment-123") == 401
        assert works(appliance, (appliance.repo / "admin-token").read_text().strip())
    finally:
        appliance.stop()


def test_rotation_invalidates_the_old_file_token(appliance: Appliance) -> None:
    old = (appliance.repo / "admin-token").read_text().strip()
    made = json.loads(cairn("tokens", *appliance.admin_args(), "--json", "rotate").stdout)
    new = (appliance.repo / "admin-token").read_text().strip()
    assert new == made["token"] != old
    assert (appliance.repo / "admin-token").stat().st_mode & 0o777 == 0o600
    assert refused(appliance, old) == 401
    assert works(appliance, new)
    appliance.stop()
    appliance.start()
    assert refused(appliance, old) == 401
    assert works(appliance, new)


def test_metrics_need_a_token_and_tokens_can_be_revoked(appliance: Appliance) -> None:
    assert refused(appliance, None, "/metrics") == 401
    assert refused(appliance, "metrics_guessed-value", "/metrics") == 401
    assert works(appliance, (appliance.repo / "admin-token").read_text().strip(), "/metrics")
    made = json.loads(cairn("tokens", *appliance.admin_args(), "--json", "add", "--metrics",
                            "--label", "prometheus").stdout)
    assert works(appliance, made["token"], "/metrics")
    assert refused(appliance, made["token"]) == 401
    listed = json.loads(cairn("tokens", *appliance.admin_args(), "--json").stdout)
    assert {(t["kind"], t["scope"]) for t in listed} == {("file", "admin"), ("added", "metrics")}
    assert made["token"] not in json.dumps(listed)
    assert "prometheus" in cairn("tokens", *appliance.admin_args()).stdout
    cairn("tokens", *appliance.admin_args(), "revoke", made["id"])
    assert refused(appliance, made["token"], "/metrics") == 401
    file_id = next(t["id"] for t in listed if t["kind"] == "file")
    result = cairn("tokens", *appliance.admin_args(), "revoke", file_id, check=False)
    assert result.returncode != 0 and "cairn tokens rotate" in result.stderr
    assert cairn("tokens", *appliance.admin_args(), "revoke", "0123456789ab",
                 check=False).returncode != 0


def test_admin_commands_find_the_appliance_and_take_options_anywhere(
        appliance: Appliance) -> None:
    """One-shot commands on the appliance host find where `serve` listens (REPO/appliance.url;
    the harness serves on a random port, never 8443), take options after their action, and
    fail fast saying where they looked; /metrics prints exact numbers."""
    added = cairn("machines", "add", "web01", "--repo", appliance.repo, "--json")
    assert json.loads(added.stdout)["machine"] == "web01"
    listed = cairn("machines", "--repo", appliance.repo, "--json")
    assert [m["name"] for m in json.loads(listed.stdout)] == ["web01"]
    down = cairn("jobs", "--repo", appliance.repo, "--appliance", "https://127.0.0.1:1",
                 check=False)
    assert down.returncode == 1 and "retries by itself" not in down.stderr
    assert "check that `cairn serve` runs and listens at https://127.0.0.1:1" in down.stderr
    assert "e+" not in appliance.metrics()  # start time and counters in full
    with appliance.client(None) as c:  # /docs works offline: nothing from a CDN
        page = c.request("GET", "/docs").text
        assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
        assert "SwaggerUIBundle" in c.request("GET", "/docs/assets/swagger-ui-bundle.js").text
