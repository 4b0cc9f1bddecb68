"""Rollback benchmark: how much a rollback writes and how long it takes, against a restore.

Why: issue 18 promises that rolling a disk back to a point writes only what differs. The
bench pair's newer image B is put on a loop device and rolled back to the point of the
older image A. The bytes written are read from the kernel's counters of that device
(``/sys/block/loopN/stat``, sectors written), not from cairn, and compared with the bytes
that differ between A and B (64 KiB blocks, from the pair's manifest): the target is at most
1.1x. A full `cairn restore` of the same point onto the same device is timed beside it, and
the device must equal A bit for bit after each.

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


def written(device: str) -> int:
    return int(Path(f"/sys/block/{Path(device).name}/stat").read_text().split()[6]) * 512


def timed_write(device: str, *args: str | Path) -> tuple[float, int, str]:
    """Run one cairn command that writes ``device``; (seconds, bytes the kernel saw, stdout)."""
    drop_caches()
    before = written(device)
    started = time.perf_counter()
    out = cairn(*args)
    subprocess.run(["blockdev", "--flushbufs", device], check=True)
    return time.perf_counter() - started, written(device) - before, out


def run(size: int, work: Path) -> dict[str, Any]:
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
            seconds, kernel, out = timed_write(device, "rollback", "--repo", repo, point,
                                               "--to", device, "--json")
            rolled_back_equal = filecmp.cmp(target, pair.a, shallow=False)
            full_seconds, full_kernel, _ = timed_write(device, "restore", "--repo", repo,
                                                       point, device)
        finally:
            subprocess.run(["losetup", "-d", device], check=False)
        restored_equal = filecmp.cmp(target, pair.a, shallow=False)
    report = json.loads(out)
    return {
        "size": size, "differing_bytes": pair.changed_bytes,
        "rollback": {"seconds": round(seconds, 2), "kernel_bytes_written": kernel,
                     "cairn_bytes_written": report["bytes_written"],
                     "ratio_to_differing": round(kernel / pair.changed_bytes, 3),
                     "bit_identical": rolled_back_equal},
        "full_restore": {"seconds": round(full_seconds, 2), "kernel_bytes_written": full_kernel,
                         "bit_identical": restored_equal},
        "target_ratio": TARGET,
        "load": os.getloadavg(),
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
    ok = (results["rollback"]["ratio_to_differing"] <= TARGET
          and results["rollback"]["bit_identical"] and results["full_restore"]["bit_identical"])
    print(f"{'PASS' if ok else 'FAIL'}: rollback wrote "
          f"{results['rollback']['ratio_to_differing']}x the differing bytes (target <= "
          f"{TARGET}x) in {results['rollback']['seconds']} s; full restore "
          f"{results['full_restore']['seconds']} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
