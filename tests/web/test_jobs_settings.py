"""The jobs page (history, and live rows by server-sent events) and the settings page: users,
alert channels (to a real HTTP listener) and one-time codes."""

from __future__ import annotations

import json
import re
import threading

import pyotp

from cairn.alerts import AlertStore
from cairn.appliance.tasks import Outcome, Task
from cairn.web.users import Users
from tests.alerts.receivers import WebhookListener
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


def test_the_live_rows_show_a_running_tasks_step_and_counts(site: Site) -> None:
    """A prune or a repack reports phases in counts (packs, volumes), a conversion in bytes:
    the jobs page's live row says which step runs and how far it is, in its unit."""
    tasks = site.client.app.state.cairn.tasks  # type: ignore[attr-defined]
    halfway, finish = threading.Event(), threading.Event()

    def work(task: Task) -> Outcome:
        with task.counting(7, "packs condemned") as advance:
            advance(3)
            halfway.set()
            finish.wait(30)
        return Outcome("done")

    started = tasks.start("cloud-prune", "s3://b/p", "alice", work)
    try:
        assert halfway.wait(30)
        login(site.client, "victor")
        with site.client.stream("GET", "/jobs/events") as events:
            lines = events.iter_lines()
            assert next(lines) == "event: live"
            rows = json.loads(next(lines).removeprefix("data: "))
        assert {"id": f"task-{started.id}", "what": "cloud-prune of s3://b/p (3 of 7 packs "
                "condemned)", "state": "running", "bytes": None, "seconds": None} in rows
        assert started.json()["phases"] == [{"step": "packs condemned", "done": 3,
                                             "total": 7, "unit": "items"}]
    finally:
        finish.set()


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


def test_admins_set_alert_channels_and_send_a_test(site: Site) -> None:
    login(site.client, "alice")
    token = csrf(site.client, "/settings")
    with WebhookListener() as hook:
        r = site.client.post("/settings/alerts", data={
            "csrf": token, "webhook": hook.url, "email": "ops@example.com",
            "smtp": "127.0.0.1:1", "starttls": "on", "smtp_user": "cairn",
            "smtp_password": "s3cret"})
        assert r.status_code == 200
        assert "Saved, but: SMTP server 127.0.0.1:1 cannot be reached now" in r.text
        assert f'value="{hook.url}"' in r.text and "s3cret" not in r.text
        # The password is never shown back; saving again without it keeps it.
        site.client.post("/settings/alerts", data={
            "csrf": token, "webhook": hook.url, "email": "ops@example.com",
            "smtp": "127.0.0.1:1", "smtp_user": "cairn"})
        store = AlertStore(site.repo / "appliance.db")
        try:
            kept = store.settings()
        finally:
            store.close()
        assert kept["smtp_password"] == "s3cret" and kept["starttls"] is False
        tested = site.client.post("/settings/alerts/test", data={"csrf": token})
        assert "Test through webhook: sent" in tested.text
        assert "Test through email: failed" in tested.text
        assert [m["kind"] for m in hook.received] == ["test"]
    bad = site.client.post("/settings/alerts", data={"csrf": token, "webhook": "ftp://x"})
    assert bad.status_code == 400 and "is not an http:// or https:// URL" in bad.text
    store = AlertStore(site.repo / "appliance.db")
    try:
        assert store.settings()["webhook"] == hook.url  # a bad setting changes nothing
    finally:
        store.close()


def test_a_viewer_cannot_set_alert_channels(site: Site) -> None:
    login(site.client, "victor")
    r = site.client.post("/settings/alerts", data={"csrf": csrf(site.client, "/settings"),
                                                   "webhook": "https://evil.example/"})
    assert r.status_code == 403
    assert "Save alert channels" not in site.client.get("/settings").text


def test_users_set_up_and_turn_off_their_one_time_code(site: Site) -> None:
    login(site.client, "victor")  # a viewer guards their own login too
    page = site.client.get("/settings/totp").text
    secret = re.search(r"<code>([A-Z2-7]+)</code>", page)
    assert secret is not None and 'src="data:image/svg+xml;base64,' in page
    token = csrf(site.client, "/settings")
    wrong = site.client.post("/settings/totp", data={"csrf": token, "secret": secret.group(1),
                                                     "code": "000000"})
    assert wrong.status_code == 400 and "does not match" in wrong.text
    assert not _has_totp(site, "victor")
    code = pyotp.TOTP(secret.group(1)).now()
    r = site.client.post("/settings/totp", data={"csrf": token, "secret": secret.group(1),
                                                 "code": code})
    assert r.status_code == 200 and "Turn off one-time codes" in r.text
    site.client.cookies.clear()
    assert "Wrong user name, password or code" in login(site.client, "victor").text
    assert login(site.client, "victor", code=code).status_code == 303
    token = csrf(site.client, "/settings")
    stale = site.client.post("/settings/totp/off", data={"csrf": token, "code": "000000"})
    assert stale.status_code == 400 and _has_totp(site, "victor")
    # An admin resets a lost authenticator.
    site.client.cookies.clear()
    login(site.client, "alice")
    token = csrf(site.client, "/settings")
    assert "Reset the one-time code of victor" in site.client.get("/settings").text
    site.client.post("/settings/users/victor/totp/reset", data={"csrf": token})
    assert not _has_totp(site, "victor")


def _has_totp(site: Site, name: str) -> bool:
    user = Users(site.state).get(name)
    assert user is not None
    return user.totp
