"""`backup` refuses a source that looks wrong (`cairn.sources.sanity`), exit 1, naming which
test failed and why, and `--force` backs it up anyway; a real disk (a file system, or random
bytes such as an encrypted volume) passes untouched."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.test_cli import ok
from tests.cli.test_repository_access import batch, one_line
from tests.store.helpers import make_image


def test_wrong_sources_are_refused_unless_forced(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    disk, small, empty, text, qcow2, noise = (tmp_path / n for n in (
        "disk.img", "small.img", "empty.img", "syslog", "vm.qcow2", "noise.img"))
    subprocess.run(["mkfs.ext4", "-q", "-F", disk, "4M"], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", small, "2M"], check=True)
    empty.write_bytes(b"")
    text.write_text("".join(f"Nov 30 08:{i % 60:02d} host cron[{i}]: job ran\n"
                            for i in range(4000)))
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, "4M"], check=True)
    make_image(noise, 4 * 1024 * 1024, seed=5, fill=1.0)

    def backup(volume: str, source: Path, *more: str) -> list[str | Path]:
        return ["backup", "--repo", repo, "--volume", volume, source, "--json", *more]

    results = batch([backup("v", disk), backup("v", small), backup("e", empty),
                     backup("t", text), backup("q", qcow2), backup("n", noise),
                     backup("v", small, "--force"), backup("t", text, "--force"),
                     ["points", "--repo", repo, "--json"]])
    assert results[0]["code"] == 0 and results[5]["code"] == 0, results
    one_line(results[1], "small.img is 2.0 MiB", "points are 4.0 MiB", "right disk", "--force")
    one_line(results[2], "empty (0 bytes)", "--force")
    one_line(results[3], "does not look like a disk", "no partition table",
             "no known file system", "mostly text", "--force")
    one_line(results[4], "qcow2 image", "qemu-img convert", "--force")
    assert results[6]["code"] == 0 and results[7]["code"] == 0, results
    points = json.loads(str(results[8]["stdout"]))
    assert sorted((p["volume"], p["size"]) for p in points) == [
        ("n", 4 << 20), ("t", text.stat().st_size), ("v", 2 << 20), ("v", 4 << 20)]
