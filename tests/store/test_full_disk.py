"""A full file system never locks the user out (a real tmpfs with a size, filled to the brim).

With no byte free, the read-only commands (points, verify, stats, restore, ls) work, a
backup refuses saying how much to free, and delete and prune work (the repository's
reserve file gives the catalog room for its journal) and give space back.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_cli import cairn, ok, one_line_error


@pytest.fixture
def full_mount(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)


def _fill(mnt: Path) -> None:
    """Write until the file system refuses even 4 KiB."""
    fd = os.open(mnt / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1024 * 1024, 4096):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError:
                pass
    finally:
        os.close(fd)


def test_a_full_disk_keeps_reading_deleting_and_pruning(full_mount: Path,
                                                        tmp_path: Path) -> None:
    repo = full_mount / "repo"
    ok("init", "--repo", repo)
    image = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "8M", image], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    first = json.loads(ok("backup", "--repo", repo, "--volume", "v", image, "--json"))["point"]
    with open(image, "r+b") as f:
        f.seek(1024 * 1024)
        f.write(bytes(range(256)) * 4096 * 6)
    ok("backup", "--repo", repo, "--volume", "v", image)
    ok("backup", "--repo", repo, "--volume", "w", image)
    _fill(full_mount)
    assert len(json.loads(ok("points", "--repo", repo, "--json"))) == 3
    assert "no problems found" in ok("verify", "--repo", repo, "--read-data")
    ok("stats", "--repo", repo)
    out = tmp_path / "out.img"
    ok("restore", "--repo", repo, "v@latest", out)
    assert out.read_bytes() == image.read_bytes()
    assert "ext" in ok("ls", "--repo", repo, "v@latest")
    one_line_error(cairn("backup", "--repo", repo, "--volume", "v", image), 1,
                   "no space left", "free at least", "MiB")
    assert "deleted 1 point" in ok("delete", "--repo", repo, first)
    ok("prune", "--repo", repo, "--volume", "w", "--keep-last", "1")
    assert "no problems found" in ok("verify", "--repo", repo, "--read-data")
