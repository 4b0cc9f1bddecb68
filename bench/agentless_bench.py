"""Agentless backup benchmark: a running VM, dirty bitmaps, and what a backup costs the guest.

Why: issue 19 promises that backing up a running VM from the outside reads only what changed
and barely touches the guest. On a VM (QEMU, TCG, no OS) with one SIZE qcow2 disk filled with
random data, CHANGE of random data is written between backups (1 MiB writes at distinct
random places, through the guest's virtio device), and `cairn backup --qemu` is timed as a
user runs it (a fresh process). Targets:
- an incremental backup reads at most 1.1x the changed bytes and takes under 2 s;
- the guest's I/O pause (the QMP transaction that starts fleecing; no guest agent) < 100 ms;
- the full-read fallback (the bitmap gone, as after a restart of a VM whose image keeps no
  bitmaps) against reading the whole disk: `cat` of the image and `nbdcopy` of the same disk
  through QEMU's own NBD export (the path cairn reads by), both with a warm page cache.

Every figure is the median of `--repeats` runs (the machine is shared); the load average is
recorded. Results go to `bench/work/agentless-<time>.json`.

Run: `.venv/bin/python bench/agentless_bench.py [--size 2G] [--change 100M] [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from images import WORK, parse_size, size_label  # noqa: E402

from tests.sources.live_vm import MIB, LiveVm  # noqa: E402

Results = dict[str, Any]


def cairn(*args: str | Path) -> tuple[float, dict[str, Any]]:
    """Run the cairn CLI as a user does; (wall seconds, its --json output)."""
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "cairn", *map(str, args), "--json"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return time.monotonic() - started, json.loads(out)


def fill_random(image: Path, size: int) -> None:
    """A qcow2 image of ``size`` random bytes (every cluster allocated)."""
    raw = image.with_suffix(".raw")
    with raw.open("wb") as f:
        for _ in range(size // (64 * MIB)):
            f.write(os.urandom(64 * MIB))
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                    str(image)], check=True)
    raw.unlink()


def write_changes(vm: LiveVm, size: int, change: int, seed: int, scratch: Path) -> int:
    """Write ``change`` random bytes in 1 MiB pieces at distinct places; returns bytes."""
    rng = random.Random(seed)
    slots = rng.sample(range(size // MIB), change // MIB)
    for n, slot in enumerate(slots):
        piece = scratch / f"piece-{n}"
        piece.write_bytes(os.urandom(MIB))
        out = vm.monitor.hmp(f'qemu-io -d /machine/peripheral/vda/virtio-backend '
                             f'"write -s {piece} {slot * MIB} {MIB}"')
        assert "error" not in out.lower(), out
        piece.unlink()
    return len(slots) * MIB


def read_whole_disk(vm: LiveVm, image: Path, work: Path) -> Results:
    """Seconds to read the whole disk: `cat` of the image, `nbdcopy` via QEMU's NBD."""
    started = time.monotonic()
    subprocess.run(f"cat {image} > /dev/null", shell=True, check=True)
    cat = time.monotonic() - started
    sock = work / "bench-nbd.sock"
    vm.monitor.execute("nbd-server-start", {"addr": {"type": "unix",
                                                     "data": {"path": str(sock)}}})
    try:
        vm.monitor.execute("block-export-add", {"type": "nbd", "id": "bench",
                                                "node-name": "n-vda", "name": "vda"})
        started = time.monotonic()
        subprocess.run(["nbdcopy", f"nbd+unix:///vda?socket={sock}", "null:"], check=True)
        nbd = time.monotonic() - started
        vm.monitor.execute("block-export-del", {"id": "bench"})
        vm.monitor.wait_event("BLOCK_EXPORT_DELETED", lambda e: e.get("id") == "bench", 30)
    finally:
        vm.monitor.execute("nbd-server-stop")
    return {"cat_seconds": round(cat, 3), "nbdcopy_seconds": round(nbd, 3)}


def backup(vm: LiveVm, repo: Path) -> Results:
    wall, out = cairn("backup", "--repo", repo, "--qemu", vm.qmp)
    disk = out["disks"][0]
    return {"wall_seconds": round(wall, 3), "op_seconds": out["seconds"],
            "pause_seconds": out["pause_seconds"], "mode": disk["mode"],
            "reason": disk["reason"], "bytes_read": disk["bytes_read"],
            "bytes_stored": disk["bytes_stored"]}


def median(runs: list[Results], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 4)


def run(size: int, change: int, repeats: int, work: Path) -> Results:
    vm = LiveVm(work / "vm", {"vda": size}, name="bench")
    vm.folder.mkdir()
    fill_random(vm.image("vda"), size)
    repo = work / "repo"
    subprocess.run([sys.executable, "-m", "cairn", "init", "--repo", str(repo)], cwd=ROOT,
                   check=True, capture_output=True)
    vm.start()
    try:
        first = backup(vm, repo)
        baseline = read_whole_disk(vm, vm.image("vda"), work)
        incremental = []
        for r in range(repeats):
            written = write_changes(vm, size, change, seed=r, scratch=work)
            incremental.append({**backup(vm, repo), "changed_bytes": written})
        fallback = []
        for r in range(repeats):
            for name in [b for b in vm.bitmaps()["vda"] if b.startswith("cairn-")]:
                vm.monitor.execute("block-dirty-bitmap-remove", {"node": "n-vda",
                                                                 "name": name})
            written = write_changes(vm, size, change, seed=100 + r, scratch=work)
            fallback.append({**backup(vm, repo), "changed_bytes": written})
    finally:
        vm.stop(kill=True)
    ratio = max(r["bytes_read"] / r["changed_bytes"] for r in incremental)
    summary = {
        "incremental_read_ratio_max": round(ratio, 3),
        "incremental_wall_seconds": median(incremental, "wall_seconds"),
        "incremental_op_seconds": median(incremental, "op_seconds"),
        "pause_seconds_max": max(r["pause_seconds"] for r in [*incremental, *fallback, first]),
        "fallback_wall_seconds": median(fallback, "wall_seconds"),
        "first_full_wall_seconds": first["wall_seconds"],
        **baseline,
    }
    summary["targets"] = {
        "read <= 1.1x changed": summary["incremental_read_ratio_max"] <= 1.1,
        "incremental < 2 s": summary["incremental_wall_seconds"] < 2.0,
        "pause < 100 ms": summary["pause_seconds_max"] < 0.1,
    }
    return {"size": size, "change": change, "repeats": repeats, "first": first,
            "incremental": incremental, "fallback": fallback, "summary": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="disk size (default 2G)")
    parser.add_argument("--change", default="100M", help="written between backups (100M)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="256M disk, 16M change, 1 run")
    args = parser.parse_args()
    size, change = parse_size(args.size), parse_size(args.change)
    repeats = args.repeats
    if args.quick:
        size, change, repeats = 256 * MIB, 16 * MIB, 1
    WORK.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="agentless-", dir=WORK))
    load_before = os.getloadavg()
    try:
        results = run(size, change, repeats, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_before"], results["load_after"] = load_before, os.getloadavg()
    out = WORK / f"agentless-{size_label(size)}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"], indent=2))
    print(f"results: {out}")
    return 0 if all(results["summary"]["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
