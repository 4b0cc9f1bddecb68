"""Issue 4 end to end: back up a bootable machine, break it later, verify both points."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cli.test_cli import cairn, ok


def test_screenshot_verify_tells_good_point_from_broken(bootable_image: Path,
                                                        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    disk = tmp_path / "machine.img"
    shutil.copyfile(bootable_image, disk)
    ok("init", "--repo", repo)
    good = json.loads(ok("backup", "--repo", repo, "--volume", "vm1", disk, "--json"))["point"]
    with open(disk, "r+b") as f:  # ransomware-style damage: the boot sector is gone
        f.write(bytes(512))
    bad = json.loads(ok("backup", "--repo", repo, "--volume", "vm1", disk, "--json"))["point"]

    shot = tmp_path / "good.png"
    result = cairn("screenshot-verify", "--repo", repo, good, "--timeout", "300", "--out", shot,
                   "--json")
    assert result.stdout, result.stderr
    verdict = json.loads(result.stdout)
    assert result.returncode == 0 and verdict["status"] == "booted", verdict
    assert "login" in verdict["ocr_text"].lower()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = cairn("screenshot-verify", "--repo", repo, bad, "--timeout", "300", "--json")
    verdict = json.loads(result.stdout)
    assert result.returncode == 1 and verdict["status"] == "failed", verdict

    listed = {p["id"]: p["verification"]["status"]
              for p in json.loads(ok("points", "--repo", repo, "--json"))}
    assert listed == {good: "booted", bad: "failed"}
    assert ok("clones", "--repo", repo).strip().splitlines()[1:] == []  # throwaway clones gone
    assert "no problems found" in ok("verify", "--repo", repo, "--read-data")
    restored = tmp_path / "good.img"
    ok("restore", "--repo", repo, good, restored)
    assert restored.read_bytes() == bootable_image.read_bytes()
