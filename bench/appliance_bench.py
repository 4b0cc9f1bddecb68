"""Appliance benchmark: one appliance, 12 agents on loopback, a compressed schedule.

Why: the appliance's claims are about cost per backup under load: appliance CPU per backup,
bytes on the wire per changed byte (target <= 1.1, before compression), how long a
scheduled job waits for its agent (longest wait), and how much FIEMAP tracking makes an
agent read per changed byte (target < 2). Each agent protects a 1 GiB sparse image on a
loop-mounted XFS (reflink=1) holding DATA MiB of random data; between rounds 1% of each
volume is rewritten in 64 KiB pieces. Wire bytes are the loopback interface's transmitted
bytes (TLS, TCP and HTTP included) over the incremental rounds.

Run as root: `.venv/bin/python bench/appliance_bench.py [--agents 12] [--rounds 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.appliance.harness import Agent, Appliance, cairn, wait_for  # noqa: E402

GiB, MiB, PIECE = 1 << 30, 1 << 20, 64 * 1024


def lo_tx_bytes() -> int:
    for line in Path("/proc/net/dev").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            return int(rest.split()[8])
    raise RuntimeError("no loopback interface")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mutate(path: Path, rnd: random.Random, fraction: float) -> int:
    pieces = int(GiB * fraction) // PIECE
    with open(path, "r+b") as f:
        for _ in range(pieces):
            f.seek(rnd.randrange(0, GiB // PIECE) * PIECE)
            f.write(rnd.randbytes(PIECE))
        os.fsync(f.fileno())
    return pieces * PIECE


def succeeded(app: Appliance, name: str) -> list[dict[str, object]]:
    return [j for j in app.jobs(name) if j["state"] == "succeeded"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3, help="incremental rounds")
    parser.add_argument("--data-mib", type=int, default=64, help="random data per volume")
    parser.add_argument("--every", default="2s")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cairn-appliance-bench-"))
    fs_image, mount = work / "xfs.img", work / "mnt"
    with open(fs_image, "wb") as f:
        f.truncate((args.agents * 2 + 2) * GiB)
    subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(fs_image)], check=True)
    mount.mkdir()
    loop = subprocess.run(["losetup", "--find", "--show", str(fs_image)], check=True,
                          capture_output=True, text=True).stdout.strip()
    app = Appliance(work, tick_seconds=0.2, offline_after_seconds=30)
    agents: list[Agent] = []
    try:
        subprocess.run(["mount", loop, str(mount)], check=True)
        app.start()
        assert app.proc is not None
        rnd = random.Random(1)
        for i in range(args.agents):
            agent = Agent(app, f"m{i:02d}")
            disk = mount / f"m{i:02d}.img"
            with open(disk, "wb") as f:
                f.truncate(GiB)
                for _ in range(args.data_mib):
                    f.seek(rnd.randrange(0, GiB // MiB) * MiB)
                    f.write(rnd.randbytes(MiB))
            agent.protect("sda", disk)
            agents.append(agent)
        for agent in agents:
            agent.start()
            cairn("schedule", *app.admin_args(), "set", agent.name, "--every", args.every)
        print(f"{args.agents} agents, 1 GiB volumes, {args.data_mib} MiB data each; "
              "waiting for full backups", flush=True)
        wait_for(lambda: all(succeeded(app, a.name) for a in agents), timeout=1800, every=0.5)
        changed = 0
        done = {a.name: len(succeeded(app, a.name)) for a in agents}
        wire0, cpu0, t0 = lo_tx_bytes(), cpu_seconds(app.proc.pid), time.monotonic()
        first_incremental = max(j["id"] for a in agents for j in app.jobs(a.name))
        for r in range(args.rounds):
            for agent in agents:
                changed += mutate(mount / f"{agent.name}.img", rnd, 0.01)
            mark = {a.name: done[a.name] for a in agents}
            wait_for(lambda mark=mark: all(len(succeeded(app, a.name)) >= mark[a.name] + 2
                                           for a in agents), timeout=1800, every=0.5)
            done = {a.name: len(succeeded(app, a.name)) for a in agents}
            print(f"round {r + 1}: done", flush=True)
        wire, cpu = lo_tx_bytes() - wire0, cpu_seconds(app.proc.pid) - cpu0
        elapsed = time.monotonic() - t0
        jobs = [j for a in agents for j in app.jobs(a.name) if j["id"] > first_incremental]
        ok = [j for j in jobs if j["state"] == "succeeded"]
        waits = [float(j["waited"]) for j in ok if j["waited"] is not None]
        read = sum(int(j["bytes_read"]) for j in ok)
        result = {
            "agents": args.agents, "rounds": args.rounds, "changed_bytes": changed,
            "incremental_backups": len(ok),
            "missed_slots": sum(j["state"] == "missed" for j in jobs),
            "failed": sum(j["state"] == "failed" for j in jobs),
            "appliance_cpu_seconds_per_backup": round(cpu / max(1, len(ok)), 4),
            "wire_bytes_per_changed_byte": round(wire / changed, 4),
            "agent_read_per_changed_byte": round(read / changed, 4),
            "longest_job_wait_seconds": round(max(waits, default=0.0), 3),
            "median_job_seconds": round(statistics.median(
                float(j["seconds"]) for j in ok), 3) if ok else None,
            "elapsed_seconds": round(elapsed, 1),
        }
        print(json.dumps(result, indent=2))
        (ROOT / "bench" / "work").mkdir(parents=True, exist_ok=True)
        (ROOT / "bench" / "work" / f"appliance-{int(time.time())}.json").write_text(
            json.dumps(result, indent=2))
        return 0
    finally:
        for agent in agents:
            agent.stop()
        app.stop()
        subprocess.run(["umount", str(mount)], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    raise SystemExit(main())
