"""First-backup memory benchmark: the peak resident memory of `cairn backup` by disk size.

Why: appliances back up multi-TB disks on machines with a few GB of RAM, so what a first
backup holds must not grow with the disk (it grew about 11 MiB per GiB when the ingest
kept its per-block state in dicts and sets). Each size is a real `cairn backup` process
of an image of distinct 64 KiB blocks (no holes) into a new local repository; its peak
(``ru_maxrss`` from ``wait4``) and wall time are printed, then the growth per GiB above
the smallest size. ``--code`` compares source trees (an older cairn's and this one's),
alternating at each size. ``--trace`` instead runs one ingest in this process under tracemalloc
and prints the lines that held the most at its peak.

Run: `.venv/bin/python bench/ingest_memory_bench.py [--mib 1024 2048 4096] [--code OLD NEW]
[--trace MIB]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.appliance.memory import filled  # noqa: E402

MiB = 1 << 20


def _cairn(*args: str) -> list[str]:
    return [sys.executable, "-m", "cairn", *args]


def backup_peak(work: Path, mib: int, code: Path) -> tuple[int, float, float]:
    """Peak resident bytes, seconds and CPU seconds (less noisy on a busy machine) of one
    first backup of ``mib`` MiB by the cairn in ``code`` (a source tree)."""
    disk, repo = work / "disk.img", work / f"repo{mib}"
    filled(disk, mib)
    env = {**os.environ, "PYTHONPATH": str(code)}  # and run there: -m puts the cwd first
    subprocess.run(_cairn("init", "--repo", str(repo)), check=True, env=env, cwd=code,
                   stdout=subprocess.DEVNULL)
    started = time.monotonic()
    proc = subprocess.Popen(_cairn("backup", "--repo", str(repo), "--volume", "v", str(disk)),
                            env=env, cwd=code, stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"cairn backup of {mib} MiB failed with {proc.returncode}")
    disk.unlink()
    subprocess.run(["rm", "-rf", str(repo)], check=True)
    return usage.ru_maxrss * 1024, seconds, usage.ru_utime + usage.ru_stime


def trace(work: Path, mib: int) -> None:
    """Run one ingest under tracemalloc; print its peak and the lines holding the most."""
    from cairn.sources.image import ImageSource
    from cairn.store.ingest import Ingest
    from cairn.store.repository import Repository

    disk = work / "disk.img"
    filled(disk, mib)
    repo = Repository.init(work / "repo")
    sync = repo.chunks.backend.sync
    snapshots: list[tuple[str, tracemalloc.Snapshot]] = []

    def sync_then_snapshot() -> None:  # the ingest's state is whole just before its commit
        snapshots.append(("at the last sync of the backend", tracemalloc.take_snapshot()))
        sync()

    commit = repo.catalog.commit_point

    def snapshot_then_commit(*args: object, **kwargs: object) -> None:
        snapshots.append(("at the commit", tracemalloc.take_snapshot()))
        commit(*args, **kwargs)  # type: ignore[arg-type]

    repo.chunks.backend.sync = sync_then_snapshot  # type: ignore[method-assign]
    repo.catalog.commit_point = snapshot_then_commit  # type: ignore[method-assign]
    tracemalloc.start(1)
    with ImageSource(disk) as src:
        Ingest(repo, "v", src).run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"tracemalloc peak {peak / MiB:.1f} MiB for {mib} MiB")
    for when, snapshot in snapshots[-2:]:
        print(f"held {when}:")
        for stat in snapshot.statistics("lineno")[:10]:
            print(f"  {stat.size / MiB:7.2f} MiB {stat.count:8d} blocks  {stat.traceback}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, nargs="+", default=[1024, 2048, 4096],
                        help="disk sizes to back up, in MiB, smallest first")
    parser.add_argument("--code", type=Path, nargs="+", default=[ROOT],
                        help="cairn source trees to compare, run in turn at each size")
    parser.add_argument("--rounds", type=int, default=1,
                        help="how many times to run each tree in turn at each size")
    parser.add_argument("--trace", type=int, default=0, metavar="MIB",
                        help="instead, trace one in-process ingest of this many MiB")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cairn-ingest-memory-") as tmp:
        if args.trace:
            trace(Path(tmp), args.trace)
            return 0
        rows = []
        for mib in args.mib:
            for code in args.code * args.rounds:
                peak, seconds, cpu = backup_peak(Path(tmp), mib, code)
                rows.append({"code": str(code), "mib": mib, "peak_mib": round(peak / MiB, 1),
                             "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
                             "load": os.getloadavg()[0]})
    for code in args.code:
        mine = [r for r in rows if r["code"] == str(code)]
        for row in (r for r in mine if r["mib"] > mine[0]["mib"]):
            gib = (row["mib"] - mine[0]["mib"]) / 1024
            row["growth_mib_per_gib"] = round((row["peak_mib"] - mine[0]["peak_mib"]) / gib, 2)
    if args.json:
        print(json.dumps(rows))
        return 0
    for row in rows:
        growth = row.get("growth_mib_per_gib")
        print(f"{row['code']}: {row['mib']:6d} MiB: peak {row['peak_mib']:7.1f} MiB in "
              f"{row['seconds']:6.2f} s, {row['cpu_seconds']:6.2f} s CPU (load {row['load']:.2f})"
              + (f", +{growth} MiB per GiB" if growth is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
