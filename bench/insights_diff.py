"""How long "what changed between two backups?" takes: cairn diff against restic, borg and diff -r.

Why: cairn answers a file-level question from image-level backups. Its claim is that this is
cheap because two points share their block maps: the tree diff names the changed 64 KiB
blocks without reading data, and only files whose metadata or blocks changed are read. The
peers answer the same question in their own best way: restic and borg back the mounted
trees up as file-level snapshots (their natural use) and diff the snapshots; the plain way
mounts both images and runs `diff -rq`.

Setup (untimed): the cached image pair of `images.py` (A, and B = A after a package install
and 40 MB rewritten in place); cairn backs up A, then B with its changed ranges; each image
is loop-mounted read-only, one after the other, on the same folder, and backed up with
`restic backup .` and `borg create`, so both snapshots hold the same paths.
Timed (median of 3 runs, each from a cold page cache, wall clock of the whole command):
`cairn diff A B`, `restic diff A B`, `borg diff ::A B`, and `diff -rq --no-dereference` of
both images mounted read-only side by side. Every mount is undone in `finally`.

Run as root: `.venv/bin/python bench/insights_diff.py [--size 2G]` (uses the 2G pair when
it is cached, else 512M).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import images
from images import WORK, BenchError
from tools import CAIRN, Borg, Restic, call, timed

RUNS = 3


def median_timed(action: Callable[[], str]) -> tuple[str, float]:
    """The output of ``action`` and the median of RUNS cold-cache runs: one run on a virtual
    disk still busy writing back the setup's gigabytes can take twice as long."""
    outcomes = [timed(action) for _ in range(RUNS)]
    return outcomes[0][0], statistics.median(seconds for _, seconds in outcomes)


@contextlib.contextmanager
def mounted(image: Path, mountpoint: Path) -> Iterator[Path]:
    """``image`` (ext4) mounted read-only without journal replay; always unmounted."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    call(["mount", "-o", "loop,ro,noload", image, mountpoint])
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False, capture_output=True)


def pick_size(text: str | None) -> int:
    if text:
        return images.parse_size(text)
    for label in ("2G", "512M"):
        if (WORK / f"images-{label}" / "manifest.json").exists():
            return images.parse_size(label)
    return images.parse_size("512M")


def bench_cairn(pair: images.ImagePair, run: Path) -> tuple[float, int]:
    repo = run / "cairn"
    call([CAIRN, "init", "--repo", repo])
    backup = [CAIRN, "backup", "--repo", repo, "--volume", "vol", "--json"]
    a = json.loads(call([*backup, pair.a]))["point"]
    b = json.loads(call([*backup, pair.b, "--changed-ranges", pair.changed]))["point"]
    out, seconds = median_timed(lambda: call([CAIRN, "diff", "--repo", repo, a, b, "--json"]))
    parts = json.loads(out)["partitions"]
    changes = sum(len(p.get(k, [])) for p in parts for k in ("added", "removed", "modified"))
    return seconds, changes


def bench_restic(pair: images.ImagePair, run: Path) -> tuple[float, int]:
    restic = Restic(run)
    restic.init()
    snapshots = []
    for image in (pair.a, pair.b):
        with mounted(image, run / "tree") as tree:
            out = call(["restic", "backup", "--json", "--host", "bench", "."], restic.env,
                       cwd=tree)
        summary = [json.loads(line) for line in out.splitlines() if '"summary"' in line]
        snapshots.append(str(summary[-1]["snapshot_id"]))
    out, seconds = median_timed(lambda: call(["restic", "diff", *snapshots], restic.env))
    changes = sum(1 for line in out.splitlines() if line[:1] in "+-M" and " /" in line)
    return seconds, changes


def bench_borg(pair: images.ImagePair, run: Path) -> tuple[float, int]:
    borg = Borg(run)
    borg.init()
    for name, image in (("a", pair.a), ("b", pair.b)):
        with mounted(image, run / "tree") as tree:
            call(["borg", "create", "-C", borg.compression, f"::{name}", "."], borg.env,
                 cwd=tree)
    out, seconds = median_timed(lambda: call(["borg", "diff", "::a", "b"], borg.env))
    return seconds, len([line for line in out.splitlines() if line.strip()])


def bench_diff_r(pair: images.ImagePair, run: Path) -> tuple[float, int]:
    with mounted(pair.a, run / "mnt-a") as a, mounted(pair.b, run / "mnt-b") as b:

        def compare() -> str:
            done = subprocess.run(["diff", "-rq", "--no-dereference", str(a), str(b)],
                                  capture_output=True, text=True, check=False)
            if done.returncode not in (0, 1):
                raise BenchError(f"diff -rq failed: {done.stderr.strip()[:200]}")
            return done.stdout

        out, seconds = median_timed(compare)
    return seconds, len(out.splitlines())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", help="image pair size, e.g. 2G or 512M (default: the "
                                       "biggest cached pair)")
    args = parser.parse_args()
    try:
        pair = images.build(pick_size(args.size))
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"image pair {images.size_label(pair.size)}: {pair.changed_bytes / 2**20:.1f} MiB "
          "differ in 64 KiB blocks", flush=True)
    run = Path(tempfile.mkdtemp(prefix="insights-diff-", dir=WORK))
    results: dict[str, tuple[float, int]] = {}
    try:
        for name, bench in (("cairn diff", bench_cairn), ("restic diff", bench_restic),
                            ("borg diff", bench_borg), ("diff -rq (mounted)", bench_diff_r)):
            try:
                results[name] = bench(pair, run)
            except BenchError as error:
                print(f"  {name}: FAILED: {error}", flush=True)
                continue
            seconds, changes = results[name]
            print(f"  {name:<20} {seconds:7.2f} s  ({changes} changed paths reported)",
                  flush=True)
    finally:
        shutil.rmtree(run, ignore_errors=True)
    if "cairn diff" in results:
        base = results["cairn diff"][0]
        for name, (seconds, _) in results.items():
            if name != "cairn diff":
                print(f"  {name} / cairn diff = {seconds / base:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
