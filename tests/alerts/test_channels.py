"""Channels against real receivers: webhook JSON, SMTP with STARTTLS and login, backoff."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import pytest

from cairn.alerts import AlertStore, raise_alert, resolve_alert
from cairn.alerts.channels import ChannelError, send_email, send_webhook
from cairn.alerts.dispatch import Dispatcher, backoff
from cairn.alerts.settings import Settings
from tests.alerts.receivers import MailServer, WebhookListener
from tests.appliance.harness import free_port


def test_webhook_gets_the_documented_json_and_a_refusal_is_an_error(tmp_path: Path) -> None:
    alert = raise_alert(tmp_path, "job_failed", "backup of web01 failed", machine="web01")
    with WebhookListener() as hook:
        send_webhook(hook.url, alert)
        [doc] = hook.received
        assert doc["kind"] == "job_failed" and doc["machine"] == "web01"
        assert doc["severity"] == "critical" and doc["message"] == "backup of web01 failed"
        assert doc["first_seen"].endswith("Z") and doc["resolved"] is None
        hook.status = 500
        with pytest.raises(ChannelError, match="HTTP 500"):
            send_webhook(hook.url, alert)


def test_email_with_starttls_and_login(tmp_path: Path) -> None:
    alert = raise_alert(tmp_path, "damage", "chunk 1f2e damaged", subject="1f2e")
    with MailServer(tls_dir=tmp_path / "tls") as mail:
        assert mail.cert is not None
        trust = ssl.create_default_context(cafile=str(mail.cert))
        good = Settings(email="ops@example.com", smtp=f"127.0.0.1:{mail.port}", starttls=True,
                        smtp_user="cairn", smtp_password="s3cret")
        send_email(good, alert, trust)
        [msg] = mail.messages
        assert msg["Subject"] == "[cairn] CRITICAL damage 1f2e"
        assert msg["To"] == "ops@example.com" and "chunk 1f2e damaged" in msg.get_payload()
        assert mail.logins == ["cairn"]
        plain = Settings(**{**good.to_dict(), "starttls": False})
        with pytest.raises(ChannelError, match="AUTH extension not supported"):  # before STARTTLS
            send_email(plain, alert, trust)
        with pytest.raises(ChannelError, match="certificate"):  # not trusted by the system
            send_email(good, alert)
    assert len(mail.messages) == 1


def test_failing_channel_is_retried_with_backoff_until_it_answers(tmp_path: Path) -> None:
    port = free_port()
    store = AlertStore(tmp_path / "appliance.db")
    try:
        store.set_settings({"webhook": f"http://127.0.0.1:{port}/hook"})
        alert = raise_alert(tmp_path, "disk_low", "5% free", subject="/srv")
        resolve_alert(tmp_path, "disk_low", subject="/srv")
        dispatcher = Dispatcher(store, retry_seconds=10)
        now = time.time()
        assert dispatcher.run_once(now) == 0
        [failed, _] = store.failing()
        assert failed.attempts == 1 and "webhook" in (failed.error or "")
        assert failed.next_try == pytest.approx(now + 10, abs=2)
        assert dispatcher.run_once(now + 11) == 0
        assert store.failing()[0].next_try == pytest.approx(now + 20, abs=2)
        assert backoff(10, 3) == 40 and backoff(10, 30) == 3600
        with WebhookListener(port=port) as hook:
            assert dispatcher.run_once(now + 3600) == 2
        assert store.failing() == []
        opened, resolved = hook.received
        assert opened["id"] == resolved["id"] == alert.id
        assert opened["resolved"] is None and resolved["resolved"] is not None
    finally:
        store.close()
