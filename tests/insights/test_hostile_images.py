"""Points holding damaged or hostile file systems: browsing them ends, with what can be read.

The ext4 image here is made for real with `mkfs.ext4 -d` and then broken with `debugfs
link`, which links a directory into its own child: a cycle no healthy file system has.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import ok
from tests.insights import images


def cyclic_ext4(work: Path, image: Path) -> Path:
    tree = work / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "file.txt").write_bytes(b"inside the cycle\n")
    (tree / "top.txt").write_bytes(b"top\n")
    images.make_ext4(tree, image, size=8 * images.MIB)
    images.run("debugfs", "-w", "-R", "link /a /a/b/loop", image)
    return image


def test_directory_cycle_is_walked_once(tmp_path: Path) -> None:
    image = cyclic_ext4(tmp_path, tmp_path / "cyclic.img")
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    first = json.loads(ok("backup", "--repo", repo, "--volume", "v", image, "--json"))["point"]
    listing = ok("ls", "--repo", repo, first, "/a/b/loop/b")
    assert "file.txt" in listing
    report = json.loads(ok("diff", "--repo", repo, first, first, "--json"))
    assert report["partitions"][0]["added"] == report["partitions"][0]["removed"] == []
    out = tmp_path / "out"
    summary = json.loads(ok("restore-files", "--repo", repo, first, "/", "--to", out, "--json"))
    assert (out / "a" / "b" / "file.txt").read_bytes() == b"inside the cycle\n"
    assert (out / "top.txt").read_bytes() == b"top\n"
    assert summary["skipped"] >= 1
    assert not (out / "a" / "b" / "loop").exists()
