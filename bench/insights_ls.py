"""How long insights takes to list one directory of 10,000 files inside an ext4 image.

Builds the image with `mkfs.ext4 -d` in a temporary directory, lists the directory once to
warm the page cache, then times `FileSystem.list` (which reads every inode: kind, size,
mode, owner, times and extents). The target is under 1 s on the reference machine.

    .venv/bin/python bench/insights_ls.py [--files N]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from cairn.insights.disk import open_filesystem
from cairn.insights.volume import FileReader


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
    print(f"ext4: listed {len(entries)} entries in {elapsed:.3f} s")


if __name__ == "__main__":
    main()
