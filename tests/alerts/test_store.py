"""The alert store: one alert per open condition, resolution, deliveries owed per channel."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.alerts import AlertStore, raise_alert, resolve_alert
from cairn.errors import UsageError


def test_one_alert_per_open_condition_and_a_new_one_after_it_clears(tmp_path: Path) -> None:
    first = raise_alert(tmp_path, "job_failed", "backup failed: disk gone", machine="web01")
    again = raise_alert(tmp_path, "job_failed", "backup failed again", machine="web01")
    other = raise_alert(tmp_path, "job_failed", "backup failed", machine="db01")
    assert again.id == first.id and again.message == "backup failed again"
    assert again.first_seen == first.first_seen and again.severity == "critical"
    assert other.id != first.id
    resolved = resolve_alert(tmp_path, "job_failed", machine="web01")
    assert resolved is not None and resolved.resolved is not None
    assert resolve_alert(tmp_path, "job_failed", machine="web01") is None
    reopened = raise_alert(tmp_path, "job_failed", "failed once more", machine="web01")
    assert reopened.id not in (first.id, other.id)
    store = AlertStore(tmp_path / "appliance.db")
    try:
        assert [a.id for a in store.alerts()] == [other.id, reopened.id]
        assert [a.id for a in store.alerts(include_resolved=True)] == [
            first.id, other.id, reopened.id]
    finally:
        store.close()


def test_each_opening_and_resolution_owes_every_configured_channel(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "appliance.db")
    try:
        raise_alert(tmp_path, "damage", "chunk abc is damaged", subject="abc")
        assert store.deliveries() == []  # no channel configured: nothing is owed
        store.set_settings({"webhook": "http://127.0.0.1:9/hook", "email": "ops@example.com",
                            "smtp": "127.0.0.1:25"})
        alert = raise_alert(tmp_path, "flagged", "point looks encrypted", machine="web01",
                            subject="p1", severity="critical")
        owed = store.deliveries(due_before=alert.first_seen)
        assert {(d.event, d.channel) for d in owed} == {("open", "webhook"), ("open", "email")}
        store.delivered(owed[0])
        store.failed(owed[1], "connection refused", next_try=alert.first_seen + 60)
        assert store.deliveries(due_before=alert.first_seen + 1) == []
        assert [(d.channel, d.error) for d in store.failing()] == [
            (owed[1].channel, "connection refused")]
        resolve_alert(tmp_path, "flagged", machine="web01", subject="p1")
        events = {(d.event, d.channel) for d in store.deliveries(alert.id) if d.sent is None}
        assert events == {("open", owed[1].channel), ("resolved", "webhook"),
                          ("resolved", "email")}
    finally:
        store.close()


def test_unknown_severity_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="severity"):
        raise_alert(tmp_path, "damage", "x", severity="apocalyptic")
