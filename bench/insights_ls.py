"""How long insights takes to list one directory of 10,000 files inside an ext4 image.

Builds the image with `mkfs.ext4 -d` in a temporary directory, lists the directory once to
warm the page cache, then times `FileSystem.list` (which reads every inode: kind, size,
mode, owner, times and extents). Then the same from a recovery point: the image is backed
up into a temporary repository and the directory is listed through the point's block map,
in process (`open_point`) and as a user runs it (`cairn ls`, whole process, cold page cache
and warm). The target is under 1 s on the reference machine.

    .venv/bin/python bench/insights_ls.py [--files N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cairn.insights.disk import open_filesystem
from cairn.insights.points import open_point
from cairn.insights.volume import FileReader
from cairn.store.repository import Repository

CAIRN = [sys.executable, "-m", "cairn"]


def build_ext4(work: Path, files: int) -> Path:
    tree = work / "tree" / "many"
    tree.mkdir(parents=True)
    for i in range(files):
        (tree / f"file{i:05d}.txt").write_bytes(b"x" * (i % 100))
    image = work / "ext4.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(work / "tree"), str(image)], check=True)
    return image


def cairn(*args: str | Path) -> str:
    done = subprocess.run([*CAIRN, *map(str, args)], capture_output=True, text=True,
                          check=True)
    return done.stdout


def time_point(work: Path, image: Path) -> None:
    repo = work / "repo"
    cairn("init", "--repo", repo)
    point = json.loads(cairn("backup", "--repo", repo, "--volume", "many", image, "--json"))[
        "point"]
    opened = Repository.open(repo)
    with open_point(opened, opened.resolve(point)) as volumes:
        fs = volumes[0].filesystem
        assert fs is not None
        start = time.perf_counter()
        entries = fs.list("/many")
        cold = time.perf_counter() - start
        start = time.perf_counter()
        fs.list("/many")
        warm = time.perf_counter() - start
    print(f"point, in process: listed {len(entries)} entries in {cold:.3f} s "
          f"(again: {warm:.3f} s)")
    for label in ("cold page cache", "warm page cache"):
        if label.startswith("cold") and os.geteuid() == 0:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        start = time.perf_counter()
        out = cairn("ls", "--repo", repo, point, "/many")
        elapsed = time.perf_counter() - start
        print(f"point, `cairn ls` ({label}): {len(out.splitlines())} lines in {elapsed:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description="time listing a big directory in an image")
    parser.add_argument("--files", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cairn-bench-") as tmp:
        image = build_ext4(Path(tmp), args.files)
        with FileReader(image) as reader:
            fs = open_filesystem(reader, str(image))
            fs.list("/many")
            start = time.perf_counter()
            entries = fs.list("/many")
            elapsed = time.perf_counter() - start
            fs.close()
        print(f"ext4 image: listed {len(entries)} entries in {elapsed:.3f} s")
        time_point(Path(tmp), image)


if __name__ == "__main__":
    main()
