"""Scheduled screenshot verification of 12 machines beside their backups.

Why: issue 16 promises every point proven bootable without slowing the backups: the
appliance boots one verification at a time in its own thread, and a backup running at the
same time should take no longer than its own duration +10%. This measures both on a real
appliance (`cairn serve`) with real agents and real QEMU boots (TCG or KVM, whichever the
machine has).

Each of `--machines` machines has a boot disk (the test suite's bootable image, 64 MiB,
boots to a login prompt) and a data disk (`--data-mib` of random data). Phase 1, the
baseline: `--rounds` rounds of one incremental backup per machine (1/16 of the data disk
rewritten each time) with no verification policy. Phase 2: every machine gets
``--screenshot daily``, one round of backups makes a point of each machine due, then
backup rounds go on, exactly as in phase 1, until all the machines' verdicts are in. A
backup's duration is its job's time (agent took it to agent finished it). Phase 3: the
baseline's rounds again once every verdict is in (the machine's other load may have
changed meanwhile). Figures: the verifications' total time (policy set to last verdict)
and each boot's time and verdict, the backups' median and worst duration in each phase,
and the ratio of the median during verification to the median of phases 1 and 3
(target: <= 1.10). Results go to `bench/work/verification-<time>.json`.

Run as root (the boot image is built with a loop mount):
`.venv/bin/python bench/verification_bench.py [--machines 12] [--rounds 2]`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from images import save_result  # noqa: E402

from tests.appliance.harness import Agent, Appliance, cairn  # noqa: E402
from tests.virt.bootable_image import build_bootable_image  # noqa: E402

MiB = 1 << 20
TARGET = 1.10


def rewrite(path: Path, rnd: random.Random, size: int) -> None:
    """Rewrite a sixteenth of the data disk, in 1 MiB pieces at random places."""
    with path.open("r+b") as f:
        for _ in range(max(1, size // MiB // 16)):
            f.seek(rnd.randrange(size // MiB) * MiB)
            f.write(rnd.randbytes(MiB))


def job_seconds(app: Appliance, name: str) -> float:
    """The duration of the machine's newest finished job."""
    [job] = [j for j in app.jobs(name) if j["state"] == "succeeded"][-1:]
    return float(job["seconds"])


def backup_round(app: Appliance, agents: list[Agent], data: dict[str, Path],
                 rnd: random.Random, size: int) -> list[float]:
    out = []
    for agent in agents:
        rewrite(data[agent.name], rnd, size)
        agent.backup()
        out.append(job_seconds(app, agent.name))
    return out


def verdicts(app: Appliance, since: float) -> dict[str, dict[str, Any]]:
    """Per machine, its newest boot check made after ``since``."""
    points = json.loads(cairn("points", "--repo", app.repo, "--json").stdout)
    found: dict[str, dict[str, Any]] = {}
    for p in points:
        v = p["verification"]
        if v and v["at"] > since:
            found[p["volume"].partition(".")[0]] = v
    return found


def summary(seconds: list[float]) -> dict[str, float]:
    return {"backups": len(seconds), "median_seconds": round(statistics.median(seconds), 3),
            "worst_seconds": round(max(seconds), 3)}


def setup(app: Appliance, work: Path, count: int, size: int, rnd: random.Random
          ) -> tuple[list[Agent], dict[str, Path]]:
    boot = build_bootable_image(work / "machine.img")
    agents, data = [], {}
    for i in range(count):
        agent = Agent(app, f"m{i:02d}")
        sda, sdb = work / f"m{i:02d}-sda.img", work / f"m{i:02d}-sdb.img"
        shutil.copyfile(boot, sda)
        sdb.write_bytes(rnd.randbytes(size))
        agent.protect("sda", sda)
        agent.protect("sdb", sdb)
        agent.backup()
        agents.append(agent)
        data[agent.name] = sdb
    return agents, data


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size = args.data_mib * MiB
    rnd = random.Random(1)
    app = Appliance(work, tick_seconds=0.5)
    app.start()
    try:
        agents, data = setup(app, work, args.machines, size, rnd)
        print(f"{len(agents)} machines backed up; baseline rounds", flush=True)
        baseline = [s for _ in range(args.rounds)
                    for s in backup_round(app, agents, data, rnd, size)]
        started = time.time()
        with app.admin() as c:
            for agent in agents:
                c.json("PUT", f"/api/v1/machines/{agent.name}/verification",
                       json={"screenshot": "daily"})
        during = backup_round(app, agents, data, rnd, size)  # each machine's point is due
        found = verdicts(app, started)
        while len(found) < len(agents):
            during += backup_round(app, agents, data, rnd, size)
            found = verdicts(app, started)
            print(f"{len(found)} of {len(agents)} verified", flush=True)
        total = max(v["at"] for v in found.values()) - started
        after = [s for _ in range(args.rounds)
                 for s in backup_round(app, agents, data, rnd, size)]
    finally:
        app.stop()
    ratio = statistics.median(during) / statistics.median(baseline + after)
    return {
        "machines": args.machines, "data_mib": args.data_mib,
        "verification_total_seconds": round(total, 1),
        "verifications": {m: {"status": v["status"], "seconds": v["seconds"],
                              "reason": v["reason"]} for m, v in sorted(found.items())},
        "booted": sum(v["status"] == "booted" for v in found.values()),
        "baseline": summary(baseline), "during_verification": summary(during),
        "after": summary(after),
        "median_ratio": round(ratio, 3), "target_ratio": TARGET, "met": ratio <= TARGET,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--machines", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="baseline backup rounds")
    parser.add_argument("--data-mib", type=int, default=64, help="each data disk's size")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cairn-verification-bench-"))
    try:
        result = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save_result("verification", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
