"""Upload memory benchmark: the appliance's peak resident memory while one agent uploads.

Why: an appliance takes backups of machines far larger than its own memory, so what it
holds while an agent uploads (request bodies, frames, the ingest at commit) must not grow
with the volume. One real `cairn serve` and one real agent on loopback; each size is a
full first upload of a volume filled with distinct blocks. Before each upload the
appliance's peak (``VmHWM``) is reset through ``/proc/PID/clear_refs``, so each line is
that upload's own peak, next to the resident memory it started from.

Run: `.venv/bin/python bench/upload_memory_bench.py [--mib 8 256 1024]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.appliance.harness import Agent, Appliance  # noqa: E402
from tests.appliance.memory import filled, peak_rss, reset_peak, rss  # noqa: E402

MiB = 1 << 20


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, nargs="+", default=[8, 256, 1024],
                        help="volume sizes to upload, in MiB, in this order")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cairn-upload-memory-"))
    app = Appliance(work)
    agents: list[Agent] = []
    rows = []
    try:
        app.start()
        assert app.proc is not None
        for n, mib in enumerate(args.mib):
            disk = work / f"disk{n}.img"
            filled(disk, mib)
            agent = Agent(app, f"bench{n:02d}")
            agents.append(agent)
            agent.protect("sda", disk)
            before = rss(app.proc.pid)
            reset_peak(app.proc.pid)
            started = time.monotonic()
            assert agent.backup()["ok"]
            row = {"mib": mib, "seconds": round(time.monotonic() - started, 1),
                   "rss_before_mib": round(before / MiB, 1),
                   "peak_rss_mib": round(peak_rss(app.proc.pid) / MiB, 1)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            disk.unlink()
    finally:
        for agent in agents:
            agent.stop()
        app.stop()
    print(f"work dir {work} (remove it when done)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
