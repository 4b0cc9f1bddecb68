"""Schedules and retention from the console: a preview of what a policy would remove, then
saving it (through the same operation as the REST API) deletes nothing by itself."""

from __future__ import annotations

import re

from cairn.store.repository import Repository
from tests.web.conftest import Site, csrf, login


def test_preview_then_save_a_schedule(site: Site) -> None:
    older, newer = site.points
    login(site.client, "alice")
    page = site.client.get("/machines/web01/schedule",
                           params={"every": "1h", "cron": "", "retention": "last=1"})
    assert page.status_code == 200
    assert "Preview: 1 of 2 existing points would be removed" in page.text
    text = re.sub(r"<[^>]+>", " ", page.text)
    assert re.search(rf"{older.id}\s+web01.sda\s+\S+ \S+\s+removed", text)
    assert re.search(rf"{newer.id}\s+web01.sda\s+\S+ \S+\s+kept\s+by last", text)

    token = csrf(site.client, "/machines/web01/schedule")
    saved = site.client.post("/machines/web01/schedule",
                             data={"csrf": token, "every": "1h", "retention": "last=1"})
    assert saved.status_code == 200 and saved.url.path == "/machines/web01"
    assert "every 3600 s, keep last=1" in saved.text
    machine = site.state.machine("web01")
    assert machine is not None
    schedule = site.state.schedule(machine.id)
    assert schedule is not None and schedule.every == 3600 and schedule.retention == "last=1"
    repo = Repository.open(site.repo)
    try:
        assert len(repo.catalog.points()) == 2
    finally:
        repo.close()
    again = site.client.get("/machines/web01/schedule")
    assert 'value="3600s"' in again.text and 'value="last=1"' in again.text


def test_bad_schedules_are_refused_with_the_reason(site: Site) -> None:
    login(site.client, "alice")
    token = csrf(site.client, "/machines/web01/schedule")
    neither = site.client.post("/machines/web01/schedule", data={"csrf": token})
    assert neither.status_code == 400 and "give exactly one of every" in neither.text
    rule = site.client.get("/machines/web01/schedule",
                           params={"every": "1h", "retention": "fortnightly=2"})
    assert rule.status_code == 400 and "fortnightly=2" in rule.text
    login(site.client, "victor")
    assert site.client.get("/machines/web01/schedule").status_code == 403
