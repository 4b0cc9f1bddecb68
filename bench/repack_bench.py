"""Repack benchmark: the newest of 200 points against the oldest, before and after a repack.

Why: issue 20 asks that, locally, the newest point restore within 1.1x the oldest after 200
incrementals of scattered small writes. Each incremental appends its few changed blocks
(and the block-map nodes over them) to packs of its own, so the newest point's blocks are
spread over 200 backups' packs while the oldest's sit in the first backup's. `cairn repack`
(`cairn.store.repack`) gathers the newest point's scattered chunks into fresh packs.

Setup: an image of ``--size`` (default 512 MiB) of half-compressible data with no holes,
one full backup, then ``--points - 1`` incrementals of ``--writes`` (default 32) random
4 KiB writes each (`churn.Churn`, seeded), fed as changed ranges. Timed, every restore
from a cold page cache (`tools.drop_caches`), in-process (`restore_image`: no interpreter
start in the figures), median of ``--repeats``, oldest and newest side by side: before the
repack, then after it. Every restore is checked byte for byte; beside the wall clock each
records its CPU time and the bytes it made the disk read (`/proc/self/io`), which a busy
neighbour does not move.

Run as root: `PYTHONPATH=. .venv/bin/python bench/repack_bench.py [--size 512M]` (about 5
minutes at 512 MiB on 2 cores). Results go to `bench/work/repack-TIME.json` and a summary
to stdout, with the load average.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import images
from churn import Churn
from tools import drop_caches, same_bytes, tree_bytes

from cairn.ops.backup import backup
from cairn.restore.writer import restore_image
from cairn.store.reader import PointReader
from cairn.store.repack import repack
from cairn.store.repository import Repository

BLOCK = 64 * 1024


def build_image(path: Path, size: int, seed: int = 7) -> None:
    """``size`` bytes with no holes, each 64 KiB block half random and half zeros (zstd
    stores about half of it, as real disks' data compresses)."""
    rng = random.Random(seed)
    with path.open("wb") as out:
        for _ in range(size // BLOCK):
            out.write(rng.randbytes(BLOCK // 2) + bytes(BLOCK // 2))


def disk_read() -> int:
    """Bytes this process has made the disk read (all its threads): what a layout costs,
    whatever the neighbours on a shared machine do to the wall clock."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    return 0


def restore_cold(repo: Repository, point_id: str, dest: Path, truth: Path
                 ) -> tuple[float, float, int]:
    """Wall and CPU seconds to restore ``point_id`` into ``dest`` from a cold cache,
    written out, and the bytes read from disk."""
    dest.unlink(missing_ok=True)
    drop_caches()
    read, cpu, start = disk_read(), time.process_time(), time.perf_counter()
    with PointReader(repo, repo.resolve(point_id)) as reader:
        restore_image(reader, dest)
    os.sync()
    seconds, cpu, read = (time.perf_counter() - start, time.process_time() - cpu,
                          disk_read() - read)
    if not same_bytes(dest, truth):
        raise images.BenchError(f"restore of {point_id} differs from its source")
    dest.unlink()
    return seconds, cpu, read


def side_by_side(repo: Repository, points: dict[str, tuple[str, Path]], run: Path,
                 repeats: int) -> dict[str, Any]:
    """Cold restores of each of ``points`` (name -> id, image it was taken of), in turn."""
    runs: dict[str, list[tuple[float, float, int]]] = {which: [] for which in points}
    for _ in range(repeats):
        for which, (point, truth) in points.items():
            runs[which].append(restore_cold(repo, point, run / "restore.img", truth))
    record: dict[str, Any] = {}
    for which, measured in runs.items():
        record[f"{which}_s"] = [m[0] for m in measured]
        record[which] = statistics.median(m[0] for m in measured)
        record[f"{which}_cpu_s"] = statistics.median(m[1] for m in measured)
        record[f"{which}_disk_mib"] = statistics.median(m[2] for m in measured) / 2**20
    record["newest_over_oldest"] = record["newest"] / record["oldest"]
    record["load"] = os.getloadavg()
    return record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512M")
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--writes", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=images.WORK / "repack")
    args = parser.parse_args()
    size = images.parse_size(args.size)
    run = args.work
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    first, work = run / "first.img", run / "work.img"
    build_image(first, size)
    shutil.copyfile(first, work)
    repo = Repository.init(run / "repo")
    start = time.perf_counter()
    ids = [backup(repo, "vol", work)[0].id]
    churn, ranges = Churn(work, writes=args.writes, seed=3), run / "ranges.json"
    middle = run / "middle.img"
    for step in range(1, args.points):
        churn.step(ranges)
        ids.append(backup(repo, "vol", work, ranges)[0].id)
        if step == args.points // 2:
            shutil.copyfile(work, middle)
    points = {"oldest": (ids[0], first), "middle": (ids[args.points // 2], middle),
              "newest": (ids[-1], work)}
    record: dict[str, Any] = {"size": size, "points": args.points, "writes": args.writes,
                              "backups_s": time.perf_counter() - start}
    print(f"{args.points} points of a {args.size} image, {args.writes} writes of 4 KiB "
          f"each: {record['backups_s']:.0f} s of backups", flush=True)
    record["before"] = side_by_side(repo, points, run, args.repeats)
    stored = tree_bytes(run / "repo")
    start = time.perf_counter()
    result = repack(repo)
    os.sync()
    record["repack_s"] = time.perf_counter() - start
    record["repack"] = result.to_json()
    record["stored_before"], record["stored_after"] = stored, tree_bytes(run / "repo")
    record["after"] = side_by_side(repo, points, run, args.repeats)
    repo.close()
    before, after = record["before"], record["after"]
    saved = images.save_result("repack", record)
    for when in ("before", "after"):
        r = record[when]
        print(f"{when} repack: oldest {r['oldest']:.2f} s, middle {r['middle']:.2f} s, newest "
              f"{r['newest']:.2f} s: newest/oldest {r['newest_over_oldest']:.2f}x (medians of "
              f"{args.repeats}, load {r['load'][0]:.1f}); CPU s / disk MiB read: " + ", ".join(
                  f"{w} {r[w + '_cpu_s']:.2f} / {r[w + '_disk_mib']:.0f}" for w in points),
              flush=True)
        if when == "before":
            print(f"repack: {record['repack_s']:.1f} s, moved {result.moved_bytes >> 20} MiB in "
                  f"{result.moved_chunks} chunks, compacted {result.compacted_packs} packs "
                  f"({result.compacted_bytes >> 20} MiB); stored {stored >> 20} -> "
                  f"{record['stored_after'] >> 20} MiB", flush=True)
    for which in points:
        print(f"{which}: after/before {after[which] / before[which]:.2f}x")
    print(f"target: newest/oldest after <= 1.10x: {after['newest_over_oldest']:.2f}x\n"
          f"results: {saved}")
    shutil.rmtree(run)
    return 0 if after["newest_over_oldest"] <= 1.1 else 1


if __name__ == "__main__":
    sys.exit(main())
