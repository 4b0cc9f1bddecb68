"""Point reader benchmark: what restore, NBD and insights pay for reading a point.

Why: one reader (`cairn.store.reader.PointReader` and its `BlockCache`) serves restore,
NBD exports, clones and insights (issue 11); a change to its cache or read-ahead must not
slow any of them. Setup (untimed, cached in ``--work``): a 256 MiB ext4 image with 5,000
small files, 96 MiB of random bytes and 30 MiB of text, backed up twice (the second after
one file is removed). Timed, median of 3 runs, wall clock and CPU (all threads) of the
process: a restore; the point read through its NBD device in sequential 2 MiB and 4 KiB
reads (a disk copied, a disk booting), 20,000 random 4 KiB reads, 4 threads of random
1 MiB reads; ``qemu-img convert`` over a real NBD export; insights listing a folder,
reading two files, walking the file system, and diffing the two points.

    .venv/bin/python bench/reader_bench.py [--work DIR] [--only nbd,insights]

Compare two trees by running it with each on PYTHONPATH (`compileall` both first).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cairn.insights.points import diff_points, open_point
from cairn.ops.export import ExportRequest, export
from cairn.restore.writer import restore_image
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from cairn.virt.devices import open_device

CAIRN = [sys.executable, "-m", "cairn"]
RUNS = 3


def cairn(*args: str | Path) -> str:
    return subprocess.run([*CAIRN, *map(str, args)], capture_output=True, text=True,
                          check=True).stdout


def build(work: Path) -> dict[str, str]:
    """The two points (cached): ``a`` and ``b``, ids in ``work/repo``."""
    saved = work / "points.json"
    if saved.exists():
        return dict(json.loads(saved.read_text()))
    tree = work / "tree"
    (tree / "many").mkdir(parents=True)
    for i in range(5000):
        (tree / "many" / f"f{i:05d}").write_bytes(b"x" * (i % 3000))
    (tree / "big").write_bytes(random.Random(1).randbytes(96 << 20))
    (tree / "text").write_bytes(b"".join(b"line %d of text\n" % i for i in range(2_000_000)))
    image = work / "a.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(tree), str(image)], check=True)
    repo = work / "repo"
    cairn("init", "--repo", repo)
    points = {"a": json.loads(cairn("backup", "--repo", repo, "--volume", "v", image,
                                    "--json"))["point"]}
    subprocess.run(["debugfs", "-w", "-R", "rm /many/f00010", str(image)], check=True,
                   capture_output=True)
    points["b"] = json.loads(cairn("backup", "--repo", repo, "--volume", "v", image,
                                   "--json"))["point"]
    saved.write_text(json.dumps(points))
    return points


def timed(label: str, action: Callable[[], None]) -> None:
    walls, cpus = [], []
    for _ in range(RUNS):
        wall, cpu = time.perf_counter(), time.process_time()
        action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    print(f"{label:36s} wall {sorted(walls)[RUNS // 2]:.3f} s  "
          f"cpu {sorted(cpus)[RUNS // 2]:.3f} s", flush=True)


class Reads:
    """The timed actions, each on a freshly opened repository (cold caches in cairn)."""

    def __init__(self, work: Path, points: dict[str, str]) -> None:
        self.work, self.repo, self.points = work, work / "repo", points

    def restore(self) -> None:
        with Repository.open(self.repo) as repo:
            restore_image(PointReader(repo, repo.resolve(self.points["a"])),
                          self.work / "out.img")

    def nbd_sequential(self, piece: int) -> Callable[[], None]:
        def run() -> None:
            with Repository.open(self.repo) as repo:
                device, _ = open_device(repo, self.points["a"])
                for offset in range(0, device.size, piece):
                    device.read(offset, min(piece, device.size - offset))
                device.close()
        return run

    def nbd_random(self) -> None:
        with Repository.open(self.repo) as repo:
            device, _ = open_device(repo, self.points["a"])
            rnd = random.Random(7)
            for _ in range(20_000):
                device.read(rnd.randrange(device.size // 4096) * 4096, 4096)
            device.close()

    def nbd_threads(self) -> None:
        with Repository.open(self.repo) as repo:
            device, _ = open_device(repo, self.points["a"])

            def client(seed: int) -> None:
                rnd = random.Random(seed)
                for _ in range(300):
                    device.read(rnd.randrange(device.size >> 20) << 20, 1 << 20)
            threads = [threading.Thread(target=client, args=(s,)) for s in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            device.close()

    def qemu_img(self) -> None:
        request = ExportRequest(self.points["a"], "127.0.0.1", 0, True)
        with Repository.open(self.repo) as repo, export(repo, request) as served:
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw", served[0].url,
                            str(self.work / "q.img")], check=True)

    def insights(self, what: str) -> Callable[[], None]:
        def run() -> None:
            with Repository.open(self.repo) as repo, \
                    open_point(repo, repo.resolve(self.points["a"])) as volumes:
                fs = volumes[0].filesystem
                assert fs is not None
                if what == "ls":
                    assert len(fs.list("/many")) >= 5000
                elif what == "walk":
                    assert sum(1 for _ in fs.walk("/")) > 5000
                else:
                    for name in ("/big", "/text"):
                        with fs.open(name) as f:
                            while f.read(1 << 16):
                                pass
        return run

    def diff(self) -> None:
        with Repository.open(self.repo) as repo:
            assert diff_points(repo, repo.resolve(self.points["a"]),
                               repo.resolve(self.points["b"]))


def main() -> None:
    parser = argparse.ArgumentParser(description="time reading points")
    parser.add_argument("--work", type=Path, default=Path("bench/work/reader"))
    parser.add_argument("--only", default="", help="comma-separated words of the labels")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    reads = Reads(args.work, build(args.work))
    actions = [("restore 256 MiB", reads.restore),
               ("nbd sequential 2 MiB reads", reads.nbd_sequential(2 << 20)),
               ("nbd sequential 4 KiB reads", reads.nbd_sequential(4096)),
               ("nbd 20,000 random 4 KiB reads", reads.nbd_random),
               ("nbd 4 threads x 300 1 MiB reads", reads.nbd_threads),
               ("qemu-img convert over nbd", reads.qemu_img),
               ("insights ls 5,000 files", reads.insights("ls")),
               ("insights read 126 MiB of files", reads.insights("read")),
               ("insights walk", reads.insights("walk")),
               ("insights diff of two points", reads.diff)]
    only = [w for w in args.only.split(",") if w]
    for label, action in actions:
        if not only or any(w in label for w in only):
            timed(label, action)


if __name__ == "__main__":
    main()
