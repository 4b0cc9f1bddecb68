"""The console end to end in a real browser: `cairn serve`, Debian's chromium, Playwright.

An admin logs in, sees the machine, verifies a point's boot from the page and opens its
screenshot, boots the point and reads the guest's login banner off the noVNC canvas (OCR),
browses and downloads a file, compares two points, serves one over NBD from the exports
page and reads it with nbdcopy, and logs out; a viewer's delete is
refused. An admin starts a VM of the machine's point in its offsite cloud repository (a
real SeaweedFS) from the virtual machines page, after a wrong key was refused there. Every
page passes axe-core with no critical violation, and its screenshot is saved under
``test-output/console/``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from cairn import scratch
from tests.appliance.harness import ROOT, Appliance, cairn, kill_exports
from tests.insights import images
from tests.s3server import SeaweedS3
from tests.virt.bootable_image import BANNER, build_bootable_image

OUTPUT = ROOT / "test-output" / "console"
AXE = ROOT / ".cache" / "axe-core" / "node_modules" / "axe-core" / "axe.min.js"
AXE_VERSION = "4.14.1"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse battery"


@dataclass
class World:
    appliance: Appliance
    files: dict[str, bytes]
    boot_point: str
    data_points: list[str]
    cloud: str
    """a cloud repository holding the boot point"""


def backup(repo: Path, volume: str, image: Path) -> str:
    out = cairn("backup", "--repo", repo, "--volume", volume, image, "--json").stdout
    return str(json.loads(out)["point"])


def axe_script() -> Path:
    """axe-core as setup installs it (fetched the same way here when setup has not run)."""
    if not AXE.exists():
        subprocess.run(["npm", "install", "--prefix", str(ROOT / ".cache" / "axe-core"),
                        "--no-save", "--no-audit", "--no-fund", "--silent",
                        f"axe-core@{AXE_VERSION}"], check=True, capture_output=True)
    return AXE


@pytest.fixture(scope="module")
def world(s3_server: SeaweedS3) -> Iterator[World]:
    work = scratch.make("cairn-console-")
    appliance = Appliance(work, env={**s3_server.cairn_env(work),
                                     "CAIRN_CLOUD_PACK_BYTES": str(256 << 10)})
    cloud = f"s3://{s3_server.bucket}/console-{work.name}"
    try:
        tree = work / "tree"
        tree.mkdir()
        files = images.make_tree(tree)
        data_a = images.make_ext4(tree, work / "a.img")
        (tree / "empty").unlink()
        (tree / "added.txt").write_bytes(b"new in b\n" * 100)
        data_b = images.make_ext4(tree, work / "b.img")
        boot = build_bootable_image(work / "machine.img")
        repo = appliance.repo
        boot_point = backup(repo, "web01.sda", boot)
        data_points = [backup(repo, "web01.data", data_a), backup(repo, "web01.data", data_b)]
        for name, role in (("alice", "admin"), ("victor", "viewer")):
            result = subprocess.run(
                [*_cli(), "users", "--repo", str(repo), "add", name, "--role", role,
                 "--password-stdin"], input=PASSWORD + "\n", text=True, capture_output=True,
                cwd=ROOT, timeout=60)
            assert result.returncode == 0, result.stderr
        cairn("init", "--repo", cloud, env=appliance.env)
        cairn("replicate", "--repo", repo, "--to", cloud, "--volume", "web01.sda",
              env=appliance.env)
        appliance.start()
        cairn("machines", *appliance.admin_args(), "add", "web01")
        yield World(appliance, files, boot_point, data_points, cloud)
    finally:
        kill_exports(appliance.repo)
        appliance.stop()
        shutil.rmtree(work, ignore_errors=True)


def _cli() -> list[str]:
    from tests.appliance.harness import CLI

    return CLI


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser: Browser) -> Page:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280,
                                                                      "height": 800},
                                  accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return page


def check(page: Page, name: str) -> None:
    """No critical axe-core violation on the page; its screenshot kept with the output."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)
    page.add_script_tag(path=str(axe_script()))
    critical = page.evaluate("""async () => (await axe.run()).violations
        .filter(v => v.impact === 'critical')
        .map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))""")
    assert critical == [], (name, critical)


def log_in(page: Page, url: str, name: str) -> None:
    page.goto(url + "/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    check(page, "login")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Machines")).to_be_visible()


def ocr(png: Path) -> str:
    return subprocess.run(["tesseract", str(png), "-", "--psm", "6"], capture_output=True,
                          text=True, timeout=60).stdout


def read_screen(page: Page, want: str, timeout: float) -> str:
    """OCR the noVNC canvas until ``want`` shows (the guest may still be booting)."""
    deadline = time.monotonic() + timeout
    shot = OUTPUT / "vm-canvas.png"
    text = ""
    while time.monotonic() < deadline:
        page.locator("#vnc canvas").screenshot(path=str(shot))
        text = ocr(shot)
        if want.lower() in text.lower():
            return text
        time.sleep(2)
    raise AssertionError(f"{want!r} never showed on the VM's screen; last OCR: {text!r}")


def test_an_admin_runs_through_the_console(world: World, browser: Browser) -> None:
    url = world.appliance.url
    page = new_page(browser)
    log_in(page, url, "alice")
    check(page, "dashboard")
    page.get_by_role("link", name="web01", exact=True).click()
    expect(page.get_by_role("heading", name="web01")).to_be_visible()
    check(page, "machine")

    # verify the boot point's screen from the page, then open its screenshot
    page.get_by_role("link", name=world.boot_point).click()
    page.get_by_role("button", name="Screenshot-verify now").click()
    screenshot = page.get_by_role("img", name=re.compile("screen of point"))
    deadline = time.monotonic() + 300
    while not screenshot.count() and time.monotonic() < deadline:
        time.sleep(3)
        page.reload()
    expect(screenshot).to_be_visible()
    # booted, or timed out on a machine too loaded to boot under TCG in time: a verdict
    expect(page.locator(".facts")).to_contain_text(re.compile("booted|timed_out"))
    check(page, "point")
    shot = page.request.get(f"{url}/points/{world.boot_point}/screenshot.png")
    assert shot.ok and shot.body()[:8] == b"\x89PNG\r\n\x1a\n"

    # boot it from the start form "Virtualize" opens, and read the guest's banner off the
    # noVNC canvas
    page.get_by_role("link", name="Virtualize").click()
    expect(page.get_by_label("Point", exact=True)).to_have_value(world.boot_point)
    page.get_by_label("Memory (MiB)").fill("1024")
    page.get_by_role("button", name="Start the virtual machine").click()
    expect(page.locator("#vnc canvas")).to_be_visible(timeout=120_000)
    expect(page.locator("#vnc-status")).to_have_text("connected", timeout=60_000)
    text = read_screen(page, BANNER, timeout=420)
    assert "login" in text.lower()
    check(page, "virtual-machine")
    page.get_by_role("button", name="Stop the virtual machine").click()
    expect(page.get_by_role("heading", name=f"Point {world.boot_point}")).to_be_visible()

    # browse the data volume's first point and download a file
    older, newer = world.data_points
    page.goto(f"{url}/points/{older}")
    page.get_by_role("link", name="Browse files").click()
    check(page, "files")
    page.get_by_role("link", name="docs/").click()
    page.get_by_role("link", name="deep/").click()
    with page.expect_download() as info:
        page.get_by_role("link", name="data.bin").click()
    download = Path(info.value.path())
    assert download.read_bytes() == world.files["/docs/deep/data.bin"]

    # compare the two points of the data volume
    page.goto(f"{url}/points/{newer}")
    page.get_by_label("Compare with point").select_option(older)
    page.get_by_role("button", name="Compare").click()
    changes = page.get_by_role("table")
    expect(changes).to_contain_text("/added.txt")
    expect(changes).to_contain_text("/empty")
    check(page, "compare")

    # serve the older point over the network with a pre-shared key, read it, stop it
    page.goto(f"{url}/points/{older}")
    page.get_by_role("link", name="Export over the network").click()
    expect(page.get_by_label("Point or clone")).to_have_value(older)
    page.get_by_label("TLS").select_option("psk")
    page.get_by_role("button", name="Start the export").click()
    expect(page.locator("#export-message")).to_contain_text("serves at nbds://")
    check(page, "exports")
    keys = world.appliance.work / "console.psk"
    keys.write_text(page.locator("code.key").inner_text() + "\n")
    copy = world.appliance.work / "exported.img"
    copied = subprocess.run(["nbdcopy", page.locator("code.url").inner_text()
                             + f"?tls-psk-file={keys}", str(copy)], capture_output=True,
                            text=True, timeout=120)
    assert copied.returncode == 0, copied.stderr
    assert copy.read_bytes() == (world.appliance.work / "a.img").read_bytes()
    page.get_by_role("button", name=re.compile("Stop export")).click()
    expect(page.locator("#export-message")).to_contain_text("stopped")
    expect(page.get_by_role("cell", name="No export.")).to_be_visible()

    page.get_by_role("link", name="Jobs").click()
    expect(page.get_by_role("heading", name="Running now")).to_be_visible()
    expect(page.get_by_role("table").nth(1)).to_contain_text("screenshot-verify")
    check(page, "jobs")
    page.get_by_role("link", name="Settings").click()
    expect(page.get_by_role("cell", name="victor", exact=True)).to_be_visible()
    expect(page.get_by_label("Webhook URL")).to_be_editable()
    check(page, "settings")
    page.get_by_role("link", name="Set up a one-time code").click()
    expect(page.get_by_role("img", name=re.compile("QR code"))).to_be_visible()
    check(page, "totp")
    page.get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("img", name=re.compile("screen of web01: "))).to_be_visible()
    check(page, "dashboard-checked")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    page.goto(url + "/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.context.close()


def test_a_viewer_cannot_delete(world: World, browser: Browser) -> None:
    url = world.appliance.url
    page = new_page(browser)
    log_in(page, url, "victor")
    target = world.data_points[0]
    page.goto(f"{url}/points/{target}")
    expect(page.get_by_role("link", name="Browse files")).to_be_visible()
    assert page.get_by_role("link", name="Delete point").count() == 0
    answer = page.goto(f"{url}/points/{target}/delete")
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("alert")).to_contain_text("victor is a viewer")
    check(page, "refused")
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    refused = page.request.post(f"{url}/points/{target}/delete", form={"csrf": csrf or ""})
    assert refused.status == 403
    page.goto(f"{url}/machines/web01")
    expect(page.get_by_role("link", name=target)).to_be_visible()
    page.set_viewport_size({"width": 390, "height": 844})
    check(page, "machine-phone")
    page.goto(f"{url}/")
    check(page, "dashboard-phone")
    page.context.close()


def test_an_admin_frees_space_from_the_settings_page(world: World, browser: Browser,
                                                     s3_server: SeaweedS3) -> None:
    """The settings page's space buttons start the API's tasks, which the jobs page
    follows: a prune's preview of the cloud repository an offsite policy names, a
    conversion into packs, a repack of the local repository."""
    url = world.appliance.url
    cloud = f"s3://{s3_server.bucket}/console-space"
    cairn("offsite", *world.appliance.admin_args(), "set", "web01", "--to", cloud,
          "--every", "1d", env=world.appliance.env)
    page = new_page(browser)
    log_in(page, url, "alice")
    page.goto(f"{url}/settings")
    expect(page.get_by_role("cell", name=cloud, exact=True)).to_be_visible()
    check(page, "settings-space")
    for button, kind, says in (
            (f"Preview a prune of {cloud}", "cloud-prune-preview", "would condemn"),
            (f"Convert {cloud} to packs", "cloud-convert", "packed 0 chunk(s)"),
            ("Repack this appliance's repository", "repack", "")):
        page.goto(f"{url}/settings")
        page.get_by_role("button", name=button).click()
        expect(page).to_have_url(re.compile(r"/jobs$"))
        row = page.get_by_role("row").filter(has_text=kind).first
        deadline = time.monotonic() + 60
        while "running" in row.inner_text() and time.monotonic() < deadline:
            time.sleep(0.5)
            page.reload()
        expect(row).to_contain_text("succeeded")
        expect(row).to_contain_text(says)
    check(page, "jobs-space")
    page.context.close()


def test_an_admin_starts_a_vm_from_the_cloud(world: World, browser: Browser) -> None:
    """No boot to the banner here (the run-through above does one): the VM is running when
    its page shows, then stopped, its clone in the node's cache of the bucket dropped."""
    url = world.appliance.url
    away = [time.strftime("%H:%M", time.localtime(time.time() + 12 * 3600 + s))
            for s in (0, 300)]  # the fixture replicated already: no offsite run meanwhile
    cairn("offsite", *world.appliance.admin_args(), "set", "web01", "--to", world.cloud,
          "--every", "1d", "--window", "-".join(away), env=world.appliance.env)
    page = new_page(browser)
    log_in(page, url, "alice")
    page.get_by_role("link", name="Virtual machines").click()
    expect(page.get_by_label("Repository", exact=True)).to_have_value(world.cloud)
    page.get_by_label("Its key").fill("integrity " + "ab" * 32)
    page.get_by_role("button", name="List its points").click()
    expect(page.get_by_role("alert")).to_contain_text(
        f"the key given is not the key of {world.cloud}")
    assert not any((world.appliance.repo / "cloud-keys").glob("*"))
    page.get_by_label("Its key").fill("")  # the appliance's own key opens its offsite copies
    page.get_by_role("button", name="List its points").click()
    page.get_by_label("Point", exact=True).select_option(world.boot_point)
    page.get_by_label("Name (empty: one is made up)").fill("fromcloud")
    page.get_by_label("Memory (MiB)").fill("256")
    check(page, "vms-cloud")
    page.get_by_role("button", name="Start the virtual machine").click()
    expect(page.get_by_role("heading", name=f"Virtual machine of point {world.boot_point} "
                                            f"of {world.cloud}")).to_be_visible(timeout=120_000)
    expect(page.locator("#vm-state")).to_have_text("running")
    listed = json.loads(cairn("vm", "list", *world.appliance.admin_args(), "--json").stdout)
    assert [(v["name"], v["origin"], v["point"]) for v in listed] == [
        ("fromcloud", world.cloud, world.boot_point)]
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Virtual machines"
                                                          ).click()
    expect(page.get_by_role("link", name="fromcloud")).to_be_visible()
    check(page, "vms")
    page.get_by_role("link", name="fromcloud").click()
    page.get_by_role("button", name="Stop the virtual machine").click()
    expect(page.get_by_role("cell", name="No virtual machine.")).to_be_visible()
    clones = cairn("clones", "--repo", world.cloud, "--json", env=world.appliance.env)
    assert json.loads(clones.stdout) == []
    page.context.close()
