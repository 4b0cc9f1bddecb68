"""Upload memory benchmark: the appliance's peak resident memory while one agent uploads.

Why: an appliance takes backups of machines far larger than its own memory, so what it
holds while an agent uploads (request bodies, frames, the ingest at commit) must not grow
with the volume. One real `cairn serve` and one real agent on loopback; each size is a
full first upload of a volume filled with distinct blocks. Before each upload the
appliance's peak (``VmHWM``) is reset through ``/proc/PID/clear_refs``, so each line is
that upload's own peak, next to the resident memory it started from. The agent cuts frames
at 1 MiB; a last line (``--wide-mib``) sends a volume in frames of the largest size the
format allows (16 MiB, three to a body: four and their headers pass the 64 MiB cap), as
any token holder may, and commits it.

Run: `.venv/bin/python bench/upload_memory_bench.py [--mib 8 256 1024] [--wide-mib 256]`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cairn.frames import FRAME, MAX_FRAME  # noqa: E402
from tests.appliance.harness import Agent, Appliance  # noqa: E402
from tests.appliance.memory import filled, peak_rss, reset_peak, rss  # noqa: E402

MiB = 1 << 20
PER_BODY = 3


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, nargs="+", default=[8, 256, 1024],
                        help="volume sizes to upload, in MiB, in this order")
    parser.add_argument("--wide-mib", type=int, default=256,
                        help="volume sent in 16 MiB frames, in MiB (0: none)")
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
        if args.wide_mib:
            agents.append(Agent(app, "wide"))
            row = wide_upload(app, agents[-1].token, args.wide_mib * MiB)
            print(json.dumps(row), flush=True)
    finally:
        for agent in agents:
            agent.stop()
        app.stop()
    print(f"work dir {work} (remove it when done)")
    return 0


def wide_upload(app: Appliance, token: str, size: int) -> dict[str, object]:
    """Send ``size`` bytes in MAX_FRAME frames, PER_BODY to a body, then commit: the row
    of the appliance's peak while it did."""
    assert app.proc is not None
    part = random.Random(1).randbytes(MiB)
    frames = size // MAX_FRAME

    def body(first: int) -> Iterator[bytes]:
        for n in range(first, min(first + PER_BODY, frames)):
            yield FRAME.pack(n * MAX_FRAME, MAX_FRAME)
            for k in range(MAX_FRAME // MiB):
                yield n.to_bytes(4, "big") + k.to_bytes(4, "big") + part[8:]

    with app.client(token) as c:
        c.json("PUT", "/api/v1/agent/volumes/sda", json={"size": size})
        upload = c.json("POST", "/api/v1/agent/uploads", json={"volume": "sda",
                                                               "size": size})["upload"]
        before = rss(app.proc.pid)
        reset_peak(app.proc.pid)
        started = time.monotonic()
        for first in range(0, frames, PER_BODY):
            count = min(PER_BODY, frames - first)
            c.request("PUT", f"/api/v1/agent/uploads/{upload}/data", content=body(first),
                      headers={"Content-Length": str(count * (FRAME.size + MAX_FRAME))})
        c.json("POST", f"/api/v1/agent/uploads/{upload}/commit",
               json={"ranges": [[0, size]], "full": True}, timeout=600)
    return {"mib": size // MiB, "frames": "16 MiB", "seconds": round(time.monotonic() - started, 1),
            "rss_before_mib": round(before / MiB, 1),
            "peak_rss_mib": round(peak_rss(app.proc.pid) / MiB, 1)}


if __name__ == "__main__":
    raise SystemExit(main())
