"""The jobs page (history, and live rows by server-sent events) and the settings page."""

from __future__ import annotations

import json
import re

from cairn.web.users import Users
from tests.web.conftest import PASSWORD, Site, csrf, login


def test_jobs_history_and_live_events(site: Site) -> None:
    machine = site.state.machine("web01")
    assert machine is not None
    job_id, _ = site.state.queue_job(machine.id, "manual")
    login(site.client, "victor")
    page = site.client.get("/jobs").text
    assert "backup of web01 (manual)" in page
    assert re.search(rf"<td>{job_id}</td><td><a href=\"/machines/web01\">web01</a></td>", page)
    with site.client.stream("GET", "/jobs/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        lines = events.iter_lines()
        assert next(lines) == "event: live"
        data = next(lines)
    rows = json.loads(data.removeprefix("data: "))
    assert rows == [{"id": f"job-{job_id}", "what": "backup of web01 (manual)",
                     "state": "queued", "bytes": 0, "seconds": None}]


def test_admins_manage_users_from_the_settings_page(site: Site) -> None:
    login(site.client, "alice")
    token = csrf(site.client, "/settings")
    r = site.client.post("/settings/users", data={"csrf": token, "username": "carol",
                                                  "role": "viewer", "password": PASSWORD})
    assert r.status_code == 200 and "<td>carol</td><td>viewer</td>" in r.text
    short = site.client.post("/settings/users", data={"csrf": token, "username": "dan",
                                                      "role": "viewer", "password": "short"})
    assert short.status_code == 400 and "too short" in short.text
    myself = site.client.post("/settings/users/alice/remove", data={"csrf": token})
    assert myself.status_code == 400 and "cannot remove yourself" in myself.text
    gone = site.client.post("/settings/users/carol/remove", data={"csrf": token})
    assert gone.status_code == 200 and "carol" not in gone.text
    assert [u.name for u in Users(site.state).all_users()] == ["alice", "victor"]


def test_viewers_see_settings_but_change_nothing(site: Site) -> None:
    login(site.client, "victor")
    page = site.client.get("/settings")
    assert "Add a user" not in page.text and "No alert channel is set" in page.text
    r = site.client.post("/settings/users", data={"csrf": csrf(site.client), "username": "x1",
                                                  "role": "admin", "password": PASSWORD})
    assert r.status_code == 403
    assert Users(site.state).get("x1") is None
