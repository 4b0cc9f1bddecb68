"""Alerts end to end: a real appliance, a real webhook listener and a real SMTP server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.alerts import raise_alert
from tests.alerts.receivers import MailServer, WebhookListener
from tests.appliance.harness import Agent, Appliance, cairn, free_port, wait_for

FAST = {"tick_seconds": 0.1, "retry_seconds": 0.3}


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[MailServer]:
    with MailServer(tls_dir=tmp_path / "mail-tls") as server:
        yield server


@pytest.fixture
def tls_appliance(tmp_path: Path, mail: MailServer) -> Iterator[Appliance]:
    """An appliance that trusts the test mail server's certificate (and nothing else)."""
    app = Appliance(tmp_path, alerts=FAST, env={"SSL_CERT_FILE": str(mail.cert)})
    try:
        app.start()
        yield app
    finally:
        app.stop()


def _alerts(appliance: Appliance, *flags: str) -> dict[str, object]:
    return json.loads(cairn("alerts", *appliance.admin_args(), "--json", *flags).stdout)


def _fail_a_job(appliance: Appliance, agent: Agent, error: str) -> None:
    with appliance.admin() as admin:
        admin.json("POST", f"/api/v1/machines/{agent.name}/jobs", json={})
    with appliance.client(agent.token) as c:
        job = c.json("POST", "/api/v1/agent/jobs/next")
        c.json("POST", f"/api/v1/agent/jobs/{job['id']}/finish",
               json={"ok": False, "error": error})


def test_failed_job_alerts_by_webhook_and_starttls_mail_once_then_resolves(
        tls_appliance: Appliance, mail: MailServer, tmp_path: Path) -> None:
    app = tls_appliance
    password = tmp_path / "smtp-password"
    password.write_text("s3cret\n")
    with WebhookListener() as hook:
        out = cairn("alerts", *app.admin_args(), "set", "--webhook", hook.url, "--email",
                    "ops@example.com", "--smtp", f"127.0.0.1:{mail.port}", "--starttls",
                    "--smtp-user", "cairn", "--smtp-password-file", password)
        assert "warning" not in out.stderr and "ops@example.com" in out.stdout
        tested = cairn("alerts", *app.admin_args(), "test")
        assert tested.stdout.splitlines() == ["webhook: sent", "email: sent"]
        assert hook.of("test") and mail.subjects() == ["[cairn] INFO test"]

        agent = Agent(app, "web01")
        try:
            disk = tmp_path / "disk.img"
            disk.write_bytes(bytes(range(256)) * 4096)
            agent.protect("sda", disk)
            _fail_a_job(app, agent, "cannot read /dev/sda")
            [opened] = wait_for(lambda: hook.of("job_failed"))
            assert opened["machine"] == "web01" and opened["severity"] == "critical"
            assert "cannot read /dev/sda" in opened["message"] and opened["resolved"] is None
            wait_for(lambda: "[cairn] CRITICAL job_failed web01" in mail.subjects())
            _fail_a_job(app, agent, "cannot read /dev/sda again")
            listing = _alerts(app)
            [alert] = [a for a in listing["alerts"] if a["kind"] == "job_failed"]
            assert "again" in alert["message"]  # the same alert, refreshed
            agent.backup()
            resolved = wait_for(lambda: [m for m in hook.of("job_failed") if m["resolved"]])
            wait_for(lambda: "[cairn] RESOLVED job_failed web01" in mail.subjects())
        finally:
            agent.stop()
        assert len(hook.of("job_failed")) == 2 and resolved[0]["id"] == opened["id"]
        assert mail.subjects().count("[cairn] CRITICAL job_failed web01") == 1
        assert not [a for a in _alerts(app)["alerts"] if a["kind"] == "job_failed"]
        past = [a for a in _alerts(app, "--all")["alerts"] if a["kind"] == "job_failed"]
        assert len(past) == 1 and past[0]["resolved"] is not None
        text = cairn("alerts", *app.admin_args(), "--all").stdout
        assert "job_failed" in text and "resolved" in text


def test_unreachable_webhook_warns_keeps_the_setting_and_retries_until_it_answers(
        tmp_path: Path) -> None:
    app = Appliance(tmp_path, alerts=FAST)
    port = free_port()
    try:
        app.start()
        url = f"http://127.0.0.1:{port}/hook"
        smtp = f"127.0.0.1:{free_port()}"
        out = cairn("alerts", *app.admin_args(), "set", "--webhook", url, "--email",
                    "ops@example.com", "--smtp", smtp)
        assert f"webhook 127.0.0.1:{port} cannot be reached now" in out.stderr
        assert f"SMTP server {smtp} cannot be reached now" in out.stderr
        with app.admin() as c:
            assert c.json("GET", "/api/v1/alerts/settings")["webhook"] == url
        failed = cairn("alerts", *app.admin_args(), "test", check=False)
        assert failed.returncode == 1 and "webhook: FAILED" in failed.stdout
        assert "email: FAILED" in failed.stdout
        raise_alert(app.repo, "damage", "chunk 1f2e is damaged: points p1, p2", subject="1f2e")
        wait_for(lambda: any(f["attempts"] >= 2 for f in _alerts(app)["failing_channels"]))
        assert "webhook is FAILING" in cairn("alerts", *app.admin_args()).stdout
        with WebhookListener(port=port) as hook:
            [doc] = wait_for(lambda: hook.of("damage"), timeout=30)
        assert doc["subject"] == "1f2e" and doc["machine"] is None
        assert [f["channel"] for f in _alerts(app)["failing_channels"]] == ["email"]
    finally:
        app.stop()


def test_bad_alert_settings_are_refused_and_change_nothing(appliance: Appliance) -> None:
    no_channel = cairn("alerts", *appliance.admin_args(), "test", check=False)
    assert no_channel.returncode == 1 and "no alert channel is set" in no_channel.stderr
    cases = [(["--webhook", "ftp://example.com/x"], "http:// or https://"),
             (["--email", "ops@example.com"], "--smtp HOST:PORT"),
             (["--email", "not-an-address", "--smtp", "127.0.0.1:25"], "is not like"),
             (["--email", "ops@example.com", "--smtp", "mail.example.com"], "HOST:PORT"),
             ([], "--webhook URL")]
    for args, message in cases:
        result = cairn("alerts", *appliance.admin_args(), "set", *args, check=False)
        assert result.returncode == 1 and message in result.stderr, (args, result.stderr)
    with appliance.admin() as c:
        assert c.json("GET", "/api/v1/alerts/settings")["webhook"] is None
