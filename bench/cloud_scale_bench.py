"""Cloud scale benchmark: many appliances replicating into ONE bucket, a prune beside them.

Why: issue 20 asks whether one cloud repository serves a fleet: at least 50 processes act as
appliances (`cloud_scale_appliance.py appliance`), each backing up and replicating a few
small volumes round after round into one SeaweedFS repository (`tests/s3server.py`), while
a cloud prune (retention keeping the last points of each volume, then garbage collection)
runs beside them for some minutes. Then:

1. every point left in the bucket verifies (reading its data) and restores to exactly the
   image its appliance backed up, from a node that never saw it (a fresh cache); every point
   an appliance published is there unless the prune deleted it;
2. the table: S3 requests per published point (the server's own counters, so every request
   of every process counts: replications and the prune), objects per TiB stored (a listing
   of the bucket), time spent taking the writers' lock, and sync and open times as points
   grow;
3. how a sync with nothing new and a prune pass grow with points: point records are
   synthesized (`synth`: copies of a real point under new ids, one small record each) up to
   10,000 points, and a node with a warm cache syncs (target: under 1 s at 10,000 points).

Everything runs on one SeaweedFS on loopback, on whatever this machine's load is: the load
average is recorded with the figures. `--quick` (about five minutes here) shrinks the run and
stops the growth curve at 1,000 points. Results go to `bench/work/cloud-scale-<time>.json`.

`--grace S` shortens the prune's grace period and `--linger S` keeps the prune passing S
seconds after the fleet stopped, so that a pack condemned in one pass is deleted in a later
one within the run (the table then says the packs and bytes freed).

`--interval S` starts each appliance's rounds S seconds apart (a backup schedule) instead of
back to back: a sync then learns what the whole fleet published since the node's last
round, as in a real fleet, where batches of records (`cloud_batch`) pay; `--spread` spreads
the appliances' first rounds over the interval, as schedules are.

Run: `.venv/bin/python bench/cloud_scale_bench.py [--quick] [--grace 120 --linger 260]`
(no root needed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from images import WORK  # noqa: E402

from tests.s3server import SeaweedS3  # noqa: E402

BUCKET = "cairn-scale"
CHILD = Path(__file__).resolve().parent / "cloud_scale_appliance.py"
TIB = 2**40
SYNC_TARGET_S = 1.0
Results = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    appliances: int
    volumes: int
    size: int
    seconds: float
    levels: tuple[int, ...]
    """point counts at which the sync and prune timings are taken"""
    checkers: int = 4
    keep: int = 3
    grace: int = 180
    """CAIRN_CLOUD_LOCK_SECONDS: the prune's grace for young objects (a writer re-plans after
    half of it): long enough for a replication on a machine loaded by 50 appliances, short
    enough for a prune to delete within the run"""
    linger: float = 0.0
    """seconds the prune keeps passing after the fleet stopped: a pack condemned in one
    pass is deleted in one at least ``grace`` later"""
    interval: float = 0.0
    """seconds between the starts of an appliance's rounds (0: back to back), as a backup
    schedule: each sync then learns what the whole fleet published since its last round"""
    spread: bool = False
    """appliance n starts its first round ``interval * n / appliances`` late: backups spread
    over the interval, as schedules are, instead of all at once"""


QUICK = Settings(appliances=50, volumes=2, size=2**20, seconds=90, levels=(1000,))
DEFAULT = Settings(appliances=60, volumes=3, size=2 * 2**20, seconds=420,
                   levels=(1000, 3000, 10000))
"""On 2 cores, starting 50 processes at once takes about a minute of the fleet's time."""


class Run:
    """One benchmark run: its server, folder and the environment every process shares."""

    def __init__(self, server: SeaweedS3, work: Path) -> None:
        self.server = server
        self.work = work
        self.url = f"s3://{BUCKET}/fleet"
        self.env = {**os.environ, "PYTHONPATH": str(ROOT),
                    "CAIRN_S3_ENDPOINT": server.endpoint,
                    "CAIRN_S3_ACCESS_KEY": server.access_key,
                    "CAIRN_S3_SECRET_KEY": server.secret_key,
                    "CAIRN_KEYS": str(work / "keys")}

    def spawn(self, name: str, role: str, *argv: str | float) -> tuple[subprocess.Popen[bytes],
                                                                          Path]:
        """A child in its own folder and cache (a node of its own); returns it and its out."""
        folder = self.work / name
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / "result.json"
        log = open(folder / "log", "wb")  # noqa: SIM115 - the child keeps it open
        with log:
            child = subprocess.Popen(
                [sys.executable, str(CHILD), role, "--url", self.url, "--out", str(out),
                 "--work", str(folder), *(str(a) for a in argv)],
                env={**self.env, "CAIRN_CACHE": str(folder / "cache")},
                stdout=log, stderr=subprocess.STDOUT)
        return child, out

    def requests(self) -> dict[str, int]:
        return self.server.requests()


def wait_all(children: list[subprocess.Popen[bytes]], timeout: float) -> list[int]:
    """Wait for every child; those still running past ``timeout`` are killed (non-zero)."""
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return [c.returncode for c in children]


def read(out: Path) -> Results:
    return json.loads(out.read_text()) if out.exists() else {}


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(after.keys() | before.keys())
            if after.get(k, 0) != before.get(k, 0)}


def fleet(run: Run, s: Settings) -> Results:
    """Phase 1: the appliances and the prune, side by side until the deadline."""
    until = time.time() + s.seconds
    before = run.requests()
    start = time.monotonic()
    children = [run.spawn(f"appliance-{n:03d}", "appliance", "--index", n, "--volumes",
                          s.volumes, "--size", s.size, "--until", until,
                          "--interval", s.interval,
                          "--delay", s.interval * n / s.appliances if s.spread else 0.0)
                for n in range(s.appliances)]
    prune = run.spawn("prune", "prune", "--keep", s.keep, "--until", until + s.linger)
    codes = wait_all([c for c, _ in [*children, prune]], s.seconds + s.linger + 900)
    seconds = time.monotonic() - start
    results = [read(out) for _, out in children]
    return {"seconds": seconds, "exit_codes": codes, "requests": delta(run.requests(), before),
            "appliances": results, "prune": read(prune[1]), "load": os.getloadavg()}


def census(run: Run) -> Results:
    """Objects and bytes in the bucket, by top-level folder of the repository."""
    s3 = run.server.client()
    by: dict[str, list[int]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="fleet/"):
        for obj in page.get("Contents", []):
            folder = obj["Key"].split("/")[1]
            entry = by.setdefault(folder, [0, 0])
            entry[0] += 1
            entry[1] += obj["Size"]
    objects = sum(n for n, _ in by.values())
    size = sum(b for _, b in by.values())
    return {"objects": objects, "bytes": size, "by_folder": by,
            "objects_per_tib": objects / (size / TIB) if size else 0.0}


def check(run: Run, s: Settings, phase: Results) -> Results:
    """Phase 2: every point left verifies and restores; none is missing unless pruned."""
    expected: dict[str, str] = {}
    for result in phase["appliances"]:
        expected.update(result.get("expected", {}))
    published = {p for r in phase["appliances"] for rnd in r.get("rounds", [])
                 for p in rnd.get("points", [])}
    (run.work / "expected.json").write_text(json.dumps(expected))
    start = time.monotonic()
    checkers = [run.spawn(f"check-{k}", "check", "--expected", str(run.work / "expected.json"),
                          "--slice", f"{k}/{s.checkers}") for k in range(s.checkers)]
    codes = wait_all([c for c, _ in checkers], 3600)
    results = [read(out) for _, out in checkers]
    failures = [f for r in results for f in r.get("failures", [])]
    checked = {p for r in results for p in r.get("checked", [])}
    missing = published - set(phase["prune"].get("tried", [])) - checked
    failures += [f"{p}: published, never pruned, not in the bucket" for p in sorted(missing)]
    return {"seconds": time.monotonic() - start, "exit_codes": codes, "checked": len(checked),
            "published": len(published), "failures": failures, "load": os.getloadavg()}


def timed(fn: Callable[[], Any]) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def synthesize(run: Run, count: int, level: int) -> float:
    """``count`` more point records, from 8 processes at once; returns the seconds."""
    per = -(-count // 8)
    start = time.monotonic()
    children = [run.spawn(f"synth-{level}-{k}", "synth", "--volume", f"synth-{level}-{k}",
                          "--count", min(per, count - k * per)) for k in range(8)
                if count - k * per > 0]
    if any(wait_all([c for c, _ in children], 1800)):
        raise RuntimeError(f"synthesizing points failed: see {run.work}/synth-{level}-*/log")
    return time.monotonic() - start


def growth(run: Run, s: Settings) -> list[Results]:
    """Phase 3: at each level of points, a warm node's sync and a prune pass, timed."""
    from cairn.store.cloud import open_cloud
    bench_children = Path(__file__).resolve().parent
    sys.path.insert(0, str(bench_children))
    from cloud_scale_appliance import collect

    os.environ.update({k: v for k, v in run.env.items() if k.startswith("CAIRN_")})
    os.environ["CAIRN_CACHE"] = str(run.work / "observer" / "cache")
    rows = []
    with open_cloud(run.url, None) as cloud:
        remote = cloud.remote
        assert remote is not None
        for level in s.levels:
            have = len(cloud.catalog.points())
            made = synthesize(run, level - have, level) if level > have else 0.0
            learn_s = timed(lambda: remote.sync(cloud))
            before = run.requests()
            syncs = [timed(lambda: remote.sync(cloud)) for _ in range(3)]
            sync_requests = delta(run.requests(), before)
            start = time.monotonic()
            how = collect(cloud)
            prune_s = time.monotonic() - start
            rows.append({"points": len(cloud.catalog.points()), "synthesize_s": made,
                         "sync_new_s": learn_s, "sync_nothing_new_s": statistics.median(syncs),
                         "requests_per_sync": {k: v / 3 for k, v in sync_requests.items()},
                         "prune_pass_s": prune_s, "collect": how, "load": os.getloadavg()})
            print(f"  {rows[-1]['points']} points: sync with nothing new "
                  f"{rows[-1]['sync_nothing_new_s']:.2f} s, prune pass {prune_s:.1f} s",
                  flush=True)
    return rows


def thirds(pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(median x, median y) of the first, middle and last third of ``pairs`` sorted by x."""
    pairs = sorted(pairs)
    cut = [pairs[i * len(pairs) // 3 : (i + 1) * len(pairs) // 3] for i in range(3)]
    return [(statistics.median(x for x, _ in part), statistics.median(y for _, y in part))
            for part in cut if part]


def locks(results: list[Results]) -> Results:
    takes = [r.get("locks", {}) for r in results]
    return {"takes": sum(t.get("takes", 0) for t in takes),
            "seconds": sum(t.get("seconds", 0.0) for t in takes),
            "max_s": max((t.get("max_s", 0.0) for t in takes), default=0.0),
            "over_1s": sum(t.get("over_1s", 0) for t in takes),
            "refused": sum(t.get("refused", 0) for t in takes)}


def summarize(phase: Results) -> Results:
    """The fleet's figures: per point, per round, and how opening grew with points."""
    rounds = [rnd for r in phase["appliances"] for rnd in r.get("rounds", [])]
    good = [rnd for rnd in rounds if "error" not in rnd]
    points = sum(len(rnd["points"]) for rnd in good)
    requests = phase["requests"]
    passes = [p for p in phase["prune"].get("passes", []) if "error" not in p]
    return {
        "rounds": len(rounds), "rounds_failed": len(rounds) - len(good),
        "errors": sorted({rnd["error"][:160] for rnd in rounds if "error" in rnd})[:5],
        "points_published": points,
        "requests": requests,
        "requests_per_point": {k: v / points for k, v in requests.items()} if points else {},
        "gets_per_point_per_node": requests.get("GET", 0) / points / len(phase["appliances"])
        if points else 0.0,
        "bytes_sent_per_point": sum(r["bytes_sent"] for r in good) / points if points else 0,
        "replicate_s_median": statistics.median(r["replicate_s"] for r in good) if good else 0,
        "open_s_by_points": thirds([(r["points_known"], r["open_s"]) for r in good]),
        "appliance_locks": locks(phase["appliances"]),
        "prune_locks": locks([phase["prune"]]),
        "prune_passes": len(passes),
        "prune_failed": len(phase["prune"].get("passes", [])) - len(passes),
        "prune_s_by_points": thirds([(p["points"], p["seconds"]) for p in passes]),
        "pruned": sum(p["deleted"] for p in passes),
        "freed": {k: sum(p["collect"].get(k, 0) for p in passes if isinstance(
            p.get("collect"), dict)) for k in ("packs_condemned", "packs_repacked",
                                               "packs_written", "packs_deleted",
                                               "bytes_freed", "bytes_rewritten")},
    }


def table(res: Results) -> str:
    f, c, census_ = res["fleet"], res["check"], res["census"]
    per = f["requests_per_point"]
    lock_a, lock_p = f["appliance_locks"], f["prune_locks"]
    s = res["settings"]
    lines = [
        f"fleet: {s['appliances']} appliances x {s['volumes']} volumes of "
        f"{s['size'] / 2**20:.0f} MiB for {res['fleet_seconds']:.0f} s, a prune beside them "
        f"(load {res['load_fleet'][0]:.1f})",
        f"  rounds {f['rounds']} (failed {f['rounds_failed']}), points published "
        f"{f['points_published']}, pruned {f['pruned']} in {f['prune_passes']} passes "
        f"(failed {f['prune_failed']}); the cloud prune freed "
        + ", ".join(f"{k} {v}" for k, v in f["freed"].items()),
        "  requests per point published (all requests, the prune's included): "
        + ", ".join(f"{k} {v:.1f}" for k, v in per.items())
        + f"; total {sum(per.values()):.1f}; GETs per point per appliance "
        f"{f['gets_per_point_per_node']:.2f}",
        f"  bytes sent per point {f['bytes_sent_per_point'] / 1e3:.0f} kB, replicate median "
        f"{f['replicate_s_median']:.2f} s",
        f"  lock takes by appliances {lock_a['takes']}: {lock_a['seconds']:.0f} s in all, "
        f"max {lock_a['max_s']:.1f} s, {lock_a['over_1s']} over 1 s, {lock_a['refused']} "
        f"refused; by the prune {lock_p['takes']}: {lock_p['seconds']:.0f} s, max "
        f"{lock_p['max_s']:.1f} s, refused {lock_p['refused']}",
        "  open (sync) s by points known: " + ", ".join(
            f"{x:.0f} -> {y:.2f}" for x, y in f["open_s_by_points"]),
        "  prune pass s by points: " + ", ".join(
            f"{x:.0f} -> {y:.1f}" for x, y in f["prune_s_by_points"]),
        f"bucket: {census_['objects']} objects, {census_['bytes'] / 2**20:.0f} MiB: "
        f"{census_['objects_per_tib']:.3g} objects per TiB; by folder "
        + ", ".join(f"{k} {n}" for k, (n, _b) in sorted(census_["by_folder"].items())),
        f"check: {c['checked']} points verified and restored of {c['published']} published, "
        f"{len(c['failures'])} failures, {c['seconds']:.0f} s (load {c['load'][0]:.1f})",
        "growth (points | sync of the new s | sync, nothing new s | requests per sync | "
        "prune pass s | load):",
    ]
    for row in res["growth"]:
        verdict = "ok" if row["sync_nothing_new_s"] < SYNC_TARGET_S else "MISS"
        lines.append(
            f"  {row['points']:>6} | {row['sync_new_s']:7.1f} | "
            f"{row['sync_nothing_new_s']:6.2f} ({verdict} < {SYNC_TARGET_S:.0f} s) | "
            + " ".join(f"{k} {v:.0f}" for k, v in row["requests_per_sync"].items())
            + f" | {row['prune_pass_s']:6.1f} ({row['collect'].get('how')}) | "
            f"{row['load'][0]:.1f}")
    lines += [f"  first failure: {c['failures'][0]}"] if c["failures"] else []
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="50 appliances x 2 volumes for 90 s, growth to 1,000 points")
    parser.add_argument("--appliances", type=int, help="processes acting as appliances")
    parser.add_argument("--seconds", type=float, help="how long the fleet keeps replicating")
    parser.add_argument("--levels", help="point counts of the growth curve, e.g. 1000,10000")
    parser.add_argument("--grace", type=int, help="the prune's grace period, seconds")
    parser.add_argument("--linger", type=float,
                        help="seconds the prune goes on after the fleet stops")
    parser.add_argument("--interval", type=float,
                        help="seconds between the starts of an appliance's rounds")
    parser.add_argument("--spread", action="store_true",
                        help="spread the appliances' rounds over the interval")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    given = {"appliances": args.appliances, "seconds": args.seconds,
             "levels": tuple(int(n) for n in args.levels.split(",")) if args.levels else None,
             "grace": args.grace, "linger": args.linger, "interval": args.interval,
             "spread": args.spread}
    s = QUICK if args.quick else DEFAULT
    s = Settings(**{**s.__dict__, **{k: v for k, v in given.items() if v}})
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cloud-scale-", dir=WORK))
    os.environ["CAIRN_CLOUD_LOCK_SECONDS"] = str(s.grace)
    res: Results = {"settings": s.__dict__, "load_before": os.getloadavg()}
    try:
        with SeaweedS3.start(bucket=BUCKET, metrics=True) as server:
            run = Run(server, work)
            res.update(run_phases(run, s))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["load_after"] = os.getloadavg()
    out = WORK / f"cloud-scale-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(res, indent=1))
    print(table(res))
    print(f"load average before {res['load_before']}, after {res['load_after']}; JSON: {out}")
    return 1 if res["check"]["failures"] else 0


def run_phases(run: Run, s: Settings) -> Results:
    from cairn.store.cloud import init_cloud

    os.environ.update({k: v for k, v in run.env.items() if k.startswith("CAIRN_")})
    os.environ["CAIRN_CACHE"] = str(run.work / "init" / "cache")
    init_cloud(run.url, run.server.endpoint).close()
    print(f"fleet: {s.appliances} appliances for {s.seconds:.0f} s ...", flush=True)
    phase = fleet(run, s)
    res: Results = {"fleet": summarize(phase), "fleet_seconds": phase["seconds"],
                    "fleet_exit_codes": phase["exit_codes"], "load_fleet": phase["load"],
                    "census": census(run)}
    print("check: verify and restore every point ...", flush=True)
    res["check"] = check(run, s, phase)
    print("growth: sync and prune as points grow ...", flush=True)
    res["growth"] = growth(run, s)
    return res


if __name__ == "__main__":
    sys.exit(main())
