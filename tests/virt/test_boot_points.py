"""Issue 4 end to end: back up a bootable machine, break it later, verify both points (the
good one as a machine point: it boots with its second disk)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cli.test_cli import cairn, ok
from tests.virt.test_virtualize import record_machine_point


def test_screenshot_verify_tells_good_point_from_broken(bootable_image: Path,
                                                        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    disk = tmp_path / "machine.img"
    shutil.copyfile(bootable_image, disk)
    ok("init", "--repo", repo)
    good = json.loads(ok("backup", "--repo", repo, "--volume", "vm1", disk, "--json"))["point"]
    data = tmp_path / "data.img"
    data.write_bytes(b"SECOND DISK".ljust(1024 * 1024, b"\0"))
    second = json.loads(ok("backup", "--repo", repo, "--volume", "vm1.sdb", data,
                           "--json"))["point"]
    machine_point = record_machine_point(repo, "vm1", {"sda": good, "sdb": second})
    with open(disk, "r+b") as f:  # ransomware-style damage: the boot sector is gone
        f.write(bytes(512))
    bad = json.loads(ok("backup", "--repo", repo, "--volume", "vm1", disk, "--json"))["point"]

    shot = tmp_path / "good.png"
    result = cairn("screenshot-verify", "--repo", repo, machine_point, "--timeout", "300",
                   "--out", shot, "--json")
    assert result.stdout, result.stderr
    verdict = json.loads(result.stdout)
    assert result.returncode == 0 and verdict["status"] == "booted", verdict
    assert verdict["point"] == good and "(booted with 2 disks)" in verdict["reason"], verdict
    assert "login" in verdict["ocr_text"].lower()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = cairn("screenshot-verify", "--repo", repo, bad, "--timeout", "300", "--json")
    verdict = json.loads(result.stdout)
    assert result.returncode == 1 and verdict["status"] == "failed", verdict

    listed = {p["id"]: (p["verification"] or {}).get("status")
              for p in json.loads(ok("points", "--repo", repo, "--json"))}
    assert listed == {good: "booted", second: None, bad: "failed"}
    assert ok("clones", "--repo", repo).strip().splitlines()[1:] == []  # throwaway clones gone
    assert "no problems found" in ok("verify", "--repo", repo, "--read-data")
    restored = tmp_path / "good.img"
    ok("restore", "--repo", repo, good, restored)
    assert restored.read_bytes() == bootable_image.read_bytes()
