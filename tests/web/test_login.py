"""Logging in and out: one message for every wrong login, rate limits, expiry, CSRF, TOTP."""

from __future__ import annotations

import re
import sqlite3
import time

import pyotp
from fastapi.testclient import TestClient

from tests.web.conftest import PASSWORD, Site, csrf, login

WRONG = "Wrong user name, password or code."


def alert(html: str) -> str:
    found = re.search(r'role="alert">([^<]*)<', html)
    return found.group(1) if found else ""


def test_pages_need_a_login(site: Site) -> None:
    r = site.client.get("/machines/web01", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fmachines%2Fweb01"
    page = site.client.get("/login")
    assert '<label for="username">Username</label>' in page.text
    assert '<label for="password">Password</label>' in page.text
    assert '<button type="submit">Log in</button>' in page.text


def test_login_sets_a_strict_session_cookie(site: Site) -> None:
    r = login(site.client, "alice")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith("cairn_session="))
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag in cookie
    assert ">web01</a>" in site.client.get("/").text


def test_wrong_password_and_unknown_user_look_the_same(site: Site) -> None:
    wrong = login(site.client, "alice", "not the password")
    nobody = login(site.client, "mallory", PASSWORD)
    assert wrong.status_code == nobody.status_code == 401
    assert alert(wrong.text) == alert(nobody.text) == WRONG
    assert "cairn_session" not in site.client.cookies


def test_failed_logins_are_rate_limited(site: Site) -> None:
    for _ in range(10):
        assert login(site.client, "alice", "guess").status_code == 401
    blocked = login(site.client, "alice")
    assert blocked.status_code == 429 and "Too many failed logins" in alert(blocked.text)
    assert "cairn_session" not in site.client.cookies


def test_a_stale_login_form_is_refused(site: Site) -> None:
    r = site.client.post("/login", data={"username": "alice", "password": PASSWORD,
                                         "login_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403 and "stale" in alert(r.text)


def test_a_login_token_that_is_not_ascii_is_stale_not_a_crash(site: Site) -> None:
    """``compare_digest`` raises TypeError on non-ASCII text: anyone could make /login 500."""
    site.client.get("/login")
    r = site.client.post("/login", data={"username": "alice", "password": PASSWORD,
                                         "login_token": "forg\u00e9d"}, follow_redirects=False)
    assert r.status_code == 403 and "stale" in alert(r.text)


def test_an_expired_session_goes_back_to_the_login_page(site: Site) -> None:
    login(site.client, "alice")
    db = sqlite3.connect(site.repo / "appliance.db")
    db.execute("UPDATE console_sessions SET expires=?", (time.time() - 1,))
    db.commit()
    db.close()
    r = site.client.get("/machines/web01")
    assert r.url.path == "/login"
    assert alert(r.text) == "Your session has expired: log in again."
    assert "Traceback" not in r.text


def test_logout_needs_its_token_and_ends_the_session(site: Site) -> None:
    login(site.client, "alice")
    refused = site.client.post("/logout", data={"csrf": "wrong"})
    assert refused.status_code == 403
    token = csrf(site.client)
    r = site.client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    old = site.client.get("/", follow_redirects=False)
    assert old.status_code == 303


def test_totp_is_asked_of_enrolled_users(site: Site) -> None:
    from cairn.web.users import Users

    secret = Users(site.state).add("tina", "viewer", PASSWORD, totp=True)
    assert secret is not None
    assert alert(login(site.client, "tina").text) == WRONG
    assert alert(login(site.client, "tina", code="000000").text) == WRONG
    r = login(site.client, "tina", code=pyotp.TOTP(secret).now())
    assert r.status_code == 303


def test_login_goes_back_only_to_this_site(site: Site) -> None:
    client: TestClient = site.client
    page = client.get("/login?next=//evil.example/")
    assert 'name="next" value="/"' in page.text
