"""Rollback benchmark: how much a rollback writes and how long it takes, against a restore.

Why: issue 18 promises that rolling a disk back to a point writes only what differs. The
bench pair's newer image B is put on a loop device and rolled back to the point of the
older image A. The bytes written are read from the kernel's counters of that device
(``/sys/block/loopN/stat``, sectors written), not from cairn, and compared with the bytes
that differ between A and B (64 KiB blocks, from the pair's manifest): the target is at most
1.1x. Then B is put back and rolled back again with the pair's changed ranges as a change
tracker's (``--changed-ranges``), which reads only those (bytes read are the kernel's too).
A full `cairn restore` of the same point onto the same device is timed beside them, and the
device must equal A bit for bit after each.

Run as root: `python bench/rollback_bench.py [--size 512M] [--work DIR]` (``--work``: where
the image pair is cached, built there if missing). Results go to
`bench/work/rollback-<time>.json`.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from images import WORK, build, parse_size  # noqa: E402
from tools import drop_caches  # noqa: E402

TARGET = 1.1


def cairn(*args: str | Path) -> str:
    done = subprocess.run([sys.executable, "-m", "cairn", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"cairn {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def counters(device: str) -> tuple[int, int]:
    """(bytes read, bytes written) by the kernel's counters of ``device``."""
    fields = Path(f"/sys/block/{Path(device).name}/stat").read_text().split()
    return int(fields[2]) * 512, int(fields[6]) * 512


def measured(device: str, *args: str | Path) -> dict[str, Any]:
    """Run one cairn command that writes ``device``, cold: its time, the bytes the kernel
    saw read and written, and its --json report."""
    drop_caches()
    read_before, written_before = counters(device)
    started = time.perf_counter()
    out = cairn(*args)
    subprocess.run(["blockdev", "--flushbufs", device], check=True)
    seconds = time.perf_counter() - started
    read, wrote = counters(device)
    return {"seconds": round(seconds, 2), "kernel_bytes_read": read - read_before,
            "kernel_bytes_written": wrote - written_before,
            "report": json.loads(out) if out.strip().startswith("{") else None}


def rolled_back(result: dict[str, Any], differing: int) -> dict[str, Any]:
    report = result.pop("report")
    return {**result, "cairn_bytes_read": report["bytes_read"],
            "cairn_bytes_written": report["bytes_written"],
            "ratio_to_differing": round(result["kernel_bytes_written"] / differing, 3)}


def run(size: int, work: Path) -> dict[str, Any]:
    """B on a loop device rolled back to A's point: comparing every block, then (B again)
    with the pair's changed ranges as the tracker's; then a full restore for comparison."""
    pair = build(size, work)
    with tempfile.TemporaryDirectory(prefix="cairn-rollback-bench-") as tmp:
        folder = Path(tmp)
        repo, target = folder / "repo", folder / "target.img"
        cairn("init", "--repo", repo)
        point = json.loads(cairn("backup", "--repo", repo, "--volume", "a", pair.a,
                                 "--json"))["point"]
        shutil.copyfile(pair.b, target)
        device = subprocess.run(["losetup", "--find", "--show", str(target)], check=True,
                                capture_output=True, text=True).stdout.strip()
        try:
            rollback = "rollback", "--repo", repo, point, "--to", device, "--json"
            full_compare = measured(device, *rollback)
            full_compare["bit_identical"] = filecmp.cmp(target, pair.a, shallow=False)
            shutil.copyfile(pair.b, device)
            ranges = measured(device, *rollback, "--changed-ranges", pair.changed)
            ranges["bit_identical"] = filecmp.cmp(target, pair.a, shallow=False)
            restore = measured(device, "restore", "--repo", repo, point, device)
            restore["bit_identical"] = filecmp.cmp(target, pair.a, shallow=False)
        finally:
            subprocess.run(["losetup", "-d", device], check=False)
    restore.pop("report")
    return {
        "size": size, "differing_bytes": pair.changed_bytes,
        "rollback": rolled_back(full_compare, pair.changed_bytes),
        "rollback_changed_ranges": rolled_back(ranges, pair.changed_bytes),
        "full_restore": restore, "target_ratio": TARGET, "load": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="512M", help="image size of the bench pair")
    parser.add_argument("--work", type=Path, default=WORK, help="where the pair is cached")
    args = parser.parse_args()
    results = run(parse_size(args.size), args.work)
    out = WORK / f"rollback-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    rolls = results["rollback"], results["rollback_changed_ranges"]
    ok = (all(r["ratio_to_differing"] <= TARGET and r["bit_identical"] for r in rolls)
          and results["full_restore"]["bit_identical"])
    print(f"{'PASS' if ok else 'FAIL'}: rollback wrote {rolls[0]['ratio_to_differing']}x the "
          f"differing bytes (target <= {TARGET}x) in {rolls[0]['seconds']} s; with the "
          f"changed ranges {rolls[1]['ratio_to_differing']}x in {rolls[1]['seconds']} s, "
          f"reading {rolls[1]['kernel_bytes_read']} bytes; full restore "
          f"{results['full_restore']['seconds']} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
