"""The console's virtual machines page: a cloud repository's points (and the appliance's), and
refusals to start one.

The cloud repository is a real one in SeaweedFS, the site's points replicated into it by the
real CLI, and named as the machine's offsite target, so the page offers it with its endpoint
and opens it with the appliance's own key. A start that works boots QEMU: the browser test
(`test_browser.py`) does it once; here every refusal is one line on the page, and nothing
is kept (no VM, no key, no clone).
"""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

import pytest

from cairn.appliance.offsite import OffsiteSettings, OffsiteTable
from tests.appliance.harness import free_port
from tests.s3server import SeaweedS3
from tests.web.conftest import Site, csrf, login
from tests.web.test_pages import alert

ROOT = Path(__file__).resolve().parents[2]


def cairn(env: dict[str, str], *args: str | Path) -> None:
    subprocess.run([sys.executable, "-m", "cairn", *map(str, args)], cwd=ROOT, check=True,
                   capture_output=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
                                             **env})


@pytest.fixture
def cloud(site: Site, s3_server: SeaweedS3, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> str:
    """The site's points in a cloud repository, web01's offsite target; the console's
    process reaches the server with the same credentials, cache and keys."""
    env = s3_server.cairn_env(tmp_path)
    for name, value in env.items():
        if name != "CAIRN_S3_ENDPOINT":  # the offsite policy names the endpoint
            monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.bucket}/console-{tmp_path.name}"
    cairn(env, "init", "--repo", url)
    cairn(env, "replicate", "--repo", site.repo, "--to", url)
    machine = site.state.machine("web01")
    assert machine is not None
    OffsiteTable(site.state).set(machine.id, OffsiteSettings(
        url, s3_server.endpoint, 86400.0, "all", None, None, None, None))
    (tmp_path / "clouds.json").unlink()  # nothing but the policy says where the bucket is
    return url


def kept_nothing(site: Site) -> None:
    assert not any((site.repo / "vms").glob("*"))
    assert not any((site.repo / "cloud-keys").glob("*"))


def test_the_page_lists_a_cloud_targets_points_with_the_appliances_own_key(
        site: Site, cloud: str) -> None:
    login(site.client, "alice")
    page = site.client.get("/vms")
    assert page.status_code == 200 and "No virtual machine." in page.text
    assert f'<option value="{cloud}" selected>{cloud} (offsite copies of web01)' in page.text
    token = csrf(site.client, "/vms")
    listed = site.client.post("/vms/cloud", data={"csrf": token, "repo": cloud})
    assert listed.status_code == 200, alert(listed.text)
    for point in site.points:
        assert f'<option value="{point.id}"' in listed.text
    assert "Start the virtual machine" in listed.text
    here = site.client.post("/vms/cloud", data={"csrf": token, "repo": "local"})
    assert "Start a point of this appliance" in here.text
    assert all(f'<option value="{p.id}"' in here.text for p in site.points)
    kept_nothing(site)


def test_bad_cloud_starts_are_one_line_on_the_page_and_keep_nothing(
        site: Site, cloud: str) -> None:
    login(site.client, "alice")
    token = csrf(site.client, "/vms")
    nowhere = f"http://127.0.0.1:{free_port()}"
    wrong = {"csrf": token, "repo": cloud, "key": "integrity " + "ab" * 32}
    other = {"csrf": token, "repo": "other", "other": cloud, "endpoint": nowhere}
    start = {"csrf": token, "repo": cloud, "source": "feedfacecafe", "name": "ghost"}
    for path, form, status, words in (
            ("/vms/cloud", wrong, 400, f"the key given is not the key of {cloud}"),
            ("/vms/start", {**wrong, "source": site.points[0].id}, 400, "the key given"),
            ("/vms/cloud", other, 400, f"cannot reach the S3 endpoint {nowhere}"),
            ("/vms/start", start, 404, f"no recovery point 'feedfacecafe' in {cloud}"),
            ("/vms/cloud", {"csrf": token, "repo": "other", "other": str(site.repo)}, 400,
             "is not a cloud repository")):
        answer = site.client.post(path, data=form)
        message = html.unescape(alert(answer.text))
        assert answer.status_code == status and words in message, (path, answer.text)
        assert "\n" not in message.strip()
        kept_nothing(site)
    again = site.client.post("/vms/start", data=start)
    assert f'<option value="{site.points[1].id}"' in again.text  # choose again, as it was
    assert 'name="name" value="ghost"' in again.text


def test_a_viewer_has_no_vm_page(site: Site) -> None:
    login(site.client, "victor")
    assert site.client.get("/vms").status_code == 403
    assert 'href="/vms"' not in site.client.get("/").text
