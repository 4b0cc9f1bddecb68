"""Dashboard, machine and point pages, files, compare, export, delete: the real operations."""

from __future__ import annotations

import io
import re
import tarfile

from cairn.store import marks
from cairn.store.repository import Repository
from tests.web.conftest import Site, csrf, login


def alert(html: str) -> str:
    found = re.search(r'role="alert">([^<]*)<', html)
    return found.group(1) if found else ""


def test_dashboard_and_machine_pages(site: Site) -> None:
    login(site.client, "victor")
    dashboard = site.client.get("/")
    assert '<a href="/machines/web01">web01</a>' in dashboard.text
    assert "2</td>" in dashboard.text
    with Repository.open(site.repo) as repo:  # a flag and a lock show beside their points
        marks.flag(repo, site.points[1], ["12 files renamed to the new extension .x"])
        marks.lock(repo, [site.points[0]], 4102444800.0)
    machine = site.client.get("/machines/web01")
    for p in site.points:
        assert f'href="/points/{p.id}"' in machine.text
    assert machine.text.count("flagged as possible ransomware: 12 files renamed to the new "
                              "extension .x") == 1
    assert machine.text.count("locked until ") == 1
    point = site.client.get(f"/points/{site.points[0].id}")
    assert point.status_code == 200 and "Browse files" in point.text
    assert "Delete point" not in point.text  # a viewer is not offered changes


def test_missing_things_are_pages_not_tracebacks(site: Site) -> None:
    login(site.client, "alice")
    for url, words in (("/points/feedbeef", "no recovery point 'feedbeef'"),
                       ("/machines/nobody", "no machine 'nobody'"),
                       (f"/points/{site.points[0].id}/files?path=/nothing/here",
                        "no such file or directory in the point: /nothing/here"),
                       (f"/points/{site.points[0].id}/screenshot.png", "has no screenshot"),
                       (f"/points/{site.points[0].id}/export/iso", "no export format")):
        r = site.client.get(url)
        assert r.status_code == 404, url
        assert words in alert(r.text).replace("&#39;", "'"), (url, r.text)
        assert "Traceback" not in r.text


def test_browse_and_download_files(site: Site) -> None:
    login(site.client, "victor")
    first = site.points[0].id
    root = site.client.get(f"/points/{first}/files")
    assert root.url.query == b"path=/"
    assert f'href="/points/{first}/files?path=%2Fdocs"' in root.text
    assert "hello.txt" in root.text
    data = site.client.get(f"/points/{first}/file", params={"path": "/docs/deep/data.bin"})
    assert data.status_code == 200
    assert data.content == site.files["/docs/deep/data.bin"]
    assert "data.bin" in data.headers["content-disposition"]
    archive = site.client.get(f"/points/{first}/archive", params={"path": "/docs"})
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        names = set(tar.getnames())
        assert {"docs", "docs/readme.md", "docs/deep/data.bin", "docs/absolute-link"} <= names
        extracted = tar.extractfile("docs/deep/data.bin")
        assert extracted is not None
        assert extracted.read() == site.files["/docs/deep/data.bin"]
        assert tar.getmember("docs/absolute-link").linkname == "/etc/passwd"


def test_compare_two_points(site: Site) -> None:
    login(site.client, "victor")
    a, b = site.points
    page = site.client.get(f"/points/{b.id}/compare", params={"with": a.id})
    assert page.status_code == 200
    text = re.sub(r"<[^>]+>", " ", page.text)
    assert re.search(r"added\s+/added.txt\s+file\s+900 B", text)
    assert re.search(r"removed\s+/empty\s+file", text)
    assert re.search(r"modified\s+/docs/readme.md\s+file\s+450 B → 1.6 KiB", text)


def test_export_raw_is_the_image(site: Site) -> None:
    login(site.client, "victor")
    with site.client.stream("GET", f"/points/{site.points[0].id}/export/raw") as r:
        assert r.status_code == 200
        body = b"".join(r.iter_bytes())
    assert body == site.image_a.read_bytes()


def test_export_qcow2(site: Site) -> None:
    login(site.client, "victor")
    r = site.client.get(f"/points/{site.points[0].id}/export/qcow2")
    assert r.status_code == 200 and r.content[:4] == b"QFI\xfb"
    assert not list(site.repo.glob("cairn-export-*"))


def test_a_viewer_cannot_delete(site: Site) -> None:
    login(site.client, "victor")
    token = csrf(site.client)
    target = site.points[0].id
    r = site.client.post(f"/points/{target}/delete", data={"csrf": token})
    assert r.status_code == 403 and "victor is a viewer" in alert(r.text)
    repo = Repository.open(site.repo)
    try:
        assert repo.catalog.point(target) is not None
    finally:
        repo.close()


def test_an_admin_deletes_with_confirmation_and_token(site: Site) -> None:
    login(site.client, "alice")
    target = site.points[0].id
    confirm = site.client.get(f"/points/{target}/delete")
    assert "Delete this point" in confirm.text
    forged = site.client.post(f"/points/{target}/delete", data={"csrf": "forged"})
    assert forged.status_code == 403
    token = csrf(site.client, f"/points/{target}/delete")
    done = site.client.post(f"/points/{target}/delete", data={"csrf": token},
                            follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/machines/web01"
    with Repository.open(site.repo) as repo:
        held = [p.id for p, _ in marks.held_points(repo)]
        assert held == [target]  # held for the deletion window, as `cairn delete` does
        assert [p.id for p in marks.live_points(repo)] == [site.points[1].id]
    machine = site.client.get("/machines/web01").text
    assert f'href="/points/{target}"' not in machine


def test_open_alerts_are_on_the_dashboard(site: Site) -> None:
    from cairn.alerts import raise_alert, resolve_alert

    raise_alert(site.repo, "job_failed", "backup of web01 failed: disk gone", machine="web01")
    raise_alert(site.repo, "disk_low", "the repository is 95% full", subject="fs")
    resolve_alert(site.repo, "disk_low", subject="fs")
    login(site.client, "victor")
    page = site.client.get("/").text
    assert "Open alerts" in page and "backup of web01 failed: disk gone" in page
    assert "95% full" not in page


def test_offsite_copies_are_on_the_dashboard(site: Site) -> None:
    import time

    from cairn.appliance.offsite import OffsiteSettings, OffsiteTable

    machine = site.state.machine("web01")
    assert machine is not None
    table = OffsiteTable(site.state)
    table.set(machine.id, OffsiteSettings("s3://offsite/acme", "http://127.0.0.1:1", 3600, "all",
                                          None, None, None, None))
    login(site.client, "victor")
    page = re.sub(r"\s+", " ", site.client.get("/").text)
    assert "Copied offsite: 1 of 1" in page and "not yet" in page
    policy = table.policies(machine.id)[0]
    table.finished(policy, time.time(), "cannot reach the S3 endpoint", None)
    page = re.sub(r"\s+", " ", site.client.get("/").text)
    assert "failed</span> <span class=\"detail\">cannot reach the S3 endpoint" in page
    assert "s3://offsite/acme" in page


def test_offsite_points_are_in_the_timeline(site: Site) -> None:
    import dataclasses
    import time

    from cairn.appliance.offsite import OffsiteSettings, OffsiteTable
    from cairn.appliance.offsite_copies import OffsiteCopies

    machine = site.state.machine("web01")
    assert machine is not None
    table = OffsiteTable(site.state)
    table.set(machine.id, OffsiteSettings("s3://offsite/acme", "http://127.0.0.1:1", 3600, "all",
                                          None, None, None, None))
    older, newer = site.points
    # The cloud keeps an even older point that local retention removed, and the newer one.
    gone = dataclasses.replace(older, id="0ff517e0ff517e0ff517e0ff", created=older.created - 86400)
    OffsiteCopies(site.state).record(machine.id, [gone, newer])
    table.finished(table.policies(machine.id)[0], time.time(), None,
                   {"points_sent": 1, "cloud_stored_bytes": 3 << 20})
    login(site.client, "victor")
    dashboard = re.sub(r"\s+", " ", site.client.get("/").text)
    assert "stored offsite: 3.0 MiB" in dashboard and "2 points in s3://offsite/acme" in dashboard
    page = site.client.get("/machines/web01").text
    rows = re.findall(r"<tr>\s*<td>.*?</tr>", page, re.S)
    assert len(rows) == 3
    assert f'href="/points/{newer.id}"' in rows[0] and "here and offsite" in rows[0]
    assert f'href="/points/{older.id}"' in rows[1] and "<td>here</td>" in rows[1]
    assert gone.id in rows[2] and "offsite only" in rows[2] and "href" not in rows[2]
    assert "2 points in s3://offsite/acme, which stores 3.0 MiB" in page


def test_a_point_with_a_clone_is_not_deleted(site: Site) -> None:
    from cairn.store.clones import create_clone

    repo = Repository.open(site.repo)
    try:
        create_clone(repo, site.points[0], "keeps-it")
    finally:
        repo.close()
    login(site.client, "alice")
    target = site.points[0].id
    token = csrf(site.client, f"/points/{target}/delete")
    r = site.client.post(f"/points/{target}/delete", data={"csrf": token})
    assert r.status_code == 409 and "clone" in alert(r.text)
    assert site.client.get(f"/points/{target}").status_code == 200


def test_a_big_folder_is_shown_by_pages(site: Site) -> None:
    from cairn.web import files

    login(site.client, "victor")
    first = site.points[0].id
    page = site.client.get(f"/points/{first}/files", params={"path": "/bulk"}).text
    assert page.count('download>file') == 20 and "Next page" not in page
    size = files.PAGE
    files.PAGE = 8
    try:
        one = site.client.get(f"/points/{first}/files", params={"path": "/bulk"}).text
        three = site.client.get(f"/points/{first}/files",
                                params={"path": "/bulk", "page": 3}).text
    finally:
        files.PAGE = size
    assert "entries 1 to 8 of 20" in one and "Next page" in one and "Previous page" not in one
    assert "file00.bin" in one and "file08.bin" not in one
    assert "entries 17 to 20 of 20" in three and "file19.bin" in three
    assert "Next page" not in three and "Previous page" in three


def test_a_long_timeline_is_shown_by_pages(site: Site) -> None:
    from cairn.web import machines

    login(site.client, "victor")
    newer, older = site.points[1].id, site.points[0].id
    size = machines.PAGE
    machines.PAGE = 1
    try:
        one = site.client.get("/machines/web01").text
        two = site.client.get("/machines/web01", params={"page": 2}).text
    finally:
        machines.PAGE = size
    assert "points 1 to 1 of 2, newest first" in one and "Older points" in one
    assert f'href="/points/{newer}"' in one and f'href="/points/{older}"' not in one
    assert f'href="/points/{older}"' in two and "Newer points" in two
    assert "Older points" not in two
