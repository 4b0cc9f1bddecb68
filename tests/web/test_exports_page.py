"""The console's exports page (`cairn.web.exports`): what it offers, and refusals as one
line on the page with nothing started. Starting, reading with nbdcopy and stopping an export
is the browser test's (`test_browser.py`); the writable clone through the same manager is
`tests/appliance/test_exports_api.py`'s."""

from __future__ import annotations

import html

from cairn.store.clones import create_clone
from cairn.store.repository import Repository
from tests.web.conftest import Site, csrf, login
from tests.web.test_pages import alert


def test_bad_exports_are_one_line_on_the_page_and_start_nothing(site: Site) -> None:
    with Repository.open(site.repo) as repo:
        create_clone(repo, site.points[0], "sandbox")
    login(site.client, "alice")
    point = site.points[0].id
    offered = site.client.get(f"/exports?target={point}")
    assert offered.status_code == 200 and "No export." in offered.text
    assert f'<option value="{point}" selected>' in offered.text
    assert '<option value="sandbox">clone sandbox</option>' in offered.text
    assert f'href="/exports?target={point}#start-h"' in site.client.get(f"/points/{point}").text
    token = csrf(site.client, "/exports")
    for form, status, words in (
            ({"target": point, "writable": "true"}, 400, f"{point} is a point, always read-only"),
            ({"target": "feedfacecafe"}, 404, "no recovery point 'feedfacecafe'"),
            ({"target": "sandbox", "host": "no such host"}, 400, "cannot listen on no such host"),
            ({"target": "sandbox", "tls": "none"}, 400, "invalid request")):
        answer = site.client.post("/exports/start", data={"csrf": token, **form})
        message = html.unescape(alert(answer.text))
        assert answer.status_code == status and words in message, (form, answer.text)
        assert "\n" not in message.strip()
    assert not any((site.repo / "exports").glob("*"))
    unknown = site.client.post("/exports/0123456789ab/stop", data={"csrf": token})
    assert unknown.status_code == 404  # as REST's DELETE /api/v1/exports/ID answers
    assert "no export '0123456789ab'" in html.unescape(alert(unknown.text))


def test_virtualize_opens_the_vm_start_form_with_its_point(site: Site) -> None:
    login(site.client, "alice")
    point = site.points[1].id
    assert f'href="/vms?point={point}#start-h"' in site.client.get(f"/points/{point}").text
    form = site.client.get(f"/vms?point={point}")
    assert form.status_code == 200 and "Start a point of this appliance" in form.text
    assert f'<option value="{point}" selected>' in form.text
    assert 'name="repo" value="local"' in form.text


def test_a_viewer_has_no_exports_page(site: Site) -> None:
    login(site.client, "victor")
    assert site.client.get("/exports").status_code == 403
    assert 'href="/exports"' not in site.client.get("/").text
