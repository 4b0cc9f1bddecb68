"""Cloud benchmark: what replication to S3 costs on the wire and in time, against rclone.

Why: issue 20 sets three targets, each a ratio measured side by side in one run (so the
load of a shared machine weighs on both sides alike):

- the first replication moves the repository at least 1.5x the rate of `rclone copy` of the
  local repository folder to the same kind of server (`FIRST_VS_RCLONE`);
- a restore of point B from the bucket takes at most 1.5x its local restore
  (`RESTORE_CLOUD_VS_LOCAL`);
- the second replication sends at most 1.05x the new bytes, B's local `bytes_stored`
  (`SECOND_VS_NEW`).

Measured on a real SeaweedFS S3 gateway on loopback (`tests/s3server.py`), with the
realistic image pair of `images.py`:

1. local repository, back up A, `cairn replicate` (the first, full copy), back up B,
   replicate again (only B's new chunks); bytes sent come from `replicate --json`;
2. `rclone copy` of the local repository folder (after both backups) to a fresh server:
   a tool that only moves files, as the throughput reference;
3. `cairn restore` of point B from the bucket and from the local repository, cold cache;
4. the server's ceiling: raw PUTs of pack-sized objects (``PACK_BYTES``) through cairn's own
   S3 client (`S3Backend`, obstore), ``IN_FLIGHT`` at once as the packs upload, as many bytes
   as the first replicate sent, to a fresh server, each in one PUT (as packs go by
   default), then again each in a multipart upload (``CAIRN_S3_PART_BYTES``). SeaweedFS
   shares the 2 cores with its clients, so a target set against rclone may be out of reach
   of both: each tool's rate is also printed as a fraction of this ceiling.

The CPU seconds the server and each tool spend per GB sent (`CpuMeter`) are recorded too,
and from them the best ratio to rclone cairn could reach when both are bound by CPU (as on
this machine's 2 shared cores) even if its own CPU cost nothing: rclone's server + client
seconds per GB over the server's seconds per GB for cairn's packs.

rclone sends the folder's files whole: their apparent size (a pack's punched holes read as
zeros), which is what its rate on the wire is counted from (`repo_apparent`); its rate for
the ratio is counted, as before, from the space the folder takes (`repo_bytes`).

Each repeat starts a fresh SeaweedFS (it holds at most 2 GiB: 32 volumes of 64 MiB), and
rclone gets its own, so both write into an empty server. Figures are medians of
`--repeats` runs; the load average is recorded. Results go to `bench/work/cloud-<time>.json`.

Run as root (it drops the page cache): `.venv/bin/python bench/cloud_bench.py [--quick]`;
it needs `rclone` (`apt-get install rclone`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from images import WORK, BenchError, ImagePair, build, parse_size, size_label  # noqa: E402
from tools import CAIRN, call, drop_caches, tree_bytes  # noqa: E402

from cairn.store.backends.s3 import PART_BYTES, PARTS_IN_FLIGHT, S3Backend  # noqa: E402
from cairn.store.cloud_packs import IN_FLIGHT, PACK_BYTES  # noqa: E402
from tests.s3server import SeaweedS3  # noqa: E402

Results = dict[str, Any]
BUCKET = "cairn-bench"
FIRST_VS_RCLONE = 1.5
"""first replicate MB/s over rclone MB/s: at least this"""
RESTORE_CLOUD_VS_LOCAL = 1.5
"""restore from the bucket over restore from the local repository: at most this"""
SECOND_VS_NEW = 1.05
"""bytes the second replicate sends over B's new bytes (its `bytes_stored`): at most this"""


def cairn_env(server: SeaweedS3, cache: Path) -> dict[str, str]:
    """The environment the tests give cairn: endpoint, key and a private cache folder."""
    return {**os.environ, "CAIRN_S3_ENDPOINT": server.endpoint,
            "CAIRN_S3_ACCESS_KEY": server.access_key,
            "CAIRN_S3_SECRET_KEY": server.secret_key, "CAIRN_CACHE": str(cache)}


def rclone_env(server: SeaweedS3, config: Path) -> dict[str, str]:
    """An rclone remote `sw:` for the server, from variables only (no file in $HOME).

    AWS_CA_BUNDLE is dropped: rclone fails to start on this host's bundle, and the
    endpoint is plain HTTP anyway.
    """
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    env.update({"RCLONE_CONFIG": str(config), "RCLONE_CONFIG_SW_TYPE": "s3",
                "RCLONE_CONFIG_SW_PROVIDER": "Other",
                "RCLONE_CONFIG_SW_ACCESS_KEY_ID": server.access_key,
                "RCLONE_CONFIG_SW_SECRET_ACCESS_KEY": server.secret_key,
                "RCLONE_CONFIG_SW_ENDPOINT": server.endpoint,
                "RCLONE_CONFIG_SW_REGION": "us-east-1",
                "RCLONE_CONFIG_SW_FORCE_PATH_STYLE": "true"})
    return env


class CpuMeter:
    """CPU seconds (user + system) the server and the client (the tools this bench runs and
    waits for) spend between `start` and `stop`.

    Why: on 2 shared cores both tools are bound by CPU, the server's and their own; the
    seconds each spends per GB say what ratio is reachable at all, whatever the load."""

    def __init__(self, server: SeaweedS3) -> None:
        self.pid = server.process.pid
        self.server = self.client = 0.0

    def _now(self) -> tuple[float, float]:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        own = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (int(fields[11]) + int(fields[12])) / tick, own.ru_utime + own.ru_stime

    def start(self) -> None:
        self.server, self.client = self._now()

    def stop(self) -> tuple[float, float]:
        server, client = self._now()
        return server - self.server, client - self.client


def timed_json(argv: list[str | Path], env: dict[str, str]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = call([CAIRN, *argv, "--json"], env=env)
    return json.loads(out), time.perf_counter() - start


def timed_call(argv: list[str | Path], env: dict[str, str], cold: bool = True) -> float:
    if cold:
        drop_caches()
    start = time.perf_counter()
    call(argv, env=env)
    return time.perf_counter() - start


def apparent_bytes(path: Path) -> int:
    """What reading every file under `path` whole yields (holes as zeros): what rclone sends."""
    return sum(os.lstat(os.path.join(folder, name)).st_size
               for folder, _, files in os.walk(path) for name in files)


def server_ceiling(total: int, part_bytes: int) -> tuple[int, float]:
    """Seconds a fresh server takes `total` bytes as raw pack-sized PUTs, IN_FLIGHT at once,
    each in parts of `part_bytes` (0: one PUT each).

    Why: the rate no client on this machine can beat, the server being bound by the 2 cores
    it shares; the bodies are random (nothing for the server to squeeze) and each distinct.
    """
    body = os.urandom(PACK_BYTES)
    count = max(1, round(total / PACK_BYTES))
    with SeaweedS3.start(bucket=BUCKET) as server:
        s3 = S3Backend(BUCKET, "ceiling", endpoint_url=server.endpoint,
                       access_key=server.access_key, secret_key=server.secret_key)
        s3.part_bytes = part_bytes
        bodies = [n.to_bytes(8, "big") + body[8:] for n in range(min(count, IN_FLIGHT + 1))]
        start = time.perf_counter()
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(lambda n: s3.put(f"p{n}", bodies[n % len(bodies)]), range(count)))
        return count * PACK_BYTES, time.perf_counter() - start


def one_repeat(pair: ImagePair, tmp: Path, rclone_transfers: int) -> Results:
    """One full round on fresh servers; every figure of the table, unreduced."""
    res: Results = {}
    local, cloud = tmp / "local", f"s3://{BUCKET}/cairn"
    with SeaweedS3.start(bucket=BUCKET) as server:
        env = cairn_env(server, tmp / "cache")
        call([CAIRN, "init", "--repo", local], env=env)
        call([CAIRN, "init", "--repo", cloud], env=env)
        a, _ = timed_json(["backup", "--repo", local, "--volume", "vol", pair.a], env)
        meter = CpuMeter(server)
        meter.start()
        first, first_s = timed_json(["replicate", "--repo", local, "--to", cloud], env)
        res["first_server_cpu"], res["first_client_cpu"] = meter.stop()
        b, _ = timed_json(["backup", "--repo", local, "--volume", "vol", pair.b], env)
        second, second_s = timed_json(["replicate", "--repo", local, "--to", cloud], env)
        res.update(a_stored=a["bytes_stored"], b_stored=b["bytes_stored"],
                   first_sent=first["bytes_sent"], first_s=first_s,
                   first_reported_s=first["seconds"], first_chunks=first["chunks_sent"],
                   second_sent=second["bytes_sent"], second_s=second_s,
                   second_chunks=second["chunks_sent"],
                   local_stats=json.loads(call([CAIRN, "stats", "--repo", local, "--json"],
                                               env=env)))
        out = tmp / "restored.img"
        res["restore_cloud_s"] = timed_call([CAIRN, "restore", "--repo", cloud, b["point"], out],
                                            env)
        out.unlink()
        res["restore_local_s"] = timed_call([CAIRN, "restore", "--repo", local, b["point"], out],
                                            env)
        out.unlink()
    res["repo_bytes"] = tree_bytes(local)
    res["repo_files"] = sum(len(files) for _, _, files in os.walk(local))
    res["repo_apparent"] = apparent_bytes(local)
    with SeaweedS3.start(bucket=BUCKET) as server:
        env = rclone_env(server, tmp / "rclone.conf")
        meter = CpuMeter(server)
        drop_caches()
        meter.start()
        res["rclone_s"] = timed_call(
            ["rclone", "copy", "--s3-no-check-bucket", f"--transfers={rclone_transfers}",
             local, f"sw:{BUCKET}/rclone"], env, cold=False)
        res["rclone_server_cpu"], res["rclone_client_cpu"] = meter.stop()
    shutil.rmtree(local)
    shutil.rmtree(tmp / "cache", ignore_errors=True)
    drop_caches()
    res["ceiling_sent"], res["ceiling_s"] = server_ceiling(res["first_sent"], 0)
    drop_caches()
    res["ceiling_parts_sent"], res["ceiling_parts_s"] = server_ceiling(res["first_sent"],
                                                                       PART_BYTES)
    return res


def summarize(runs: list[Results]) -> Results:
    """Medians of every numeric figure across the repeats."""
    out: Results = {}
    for key, value in runs[0].items():
        if isinstance(value, int | float):
            out[key] = statistics.median(r[key] for r in runs)
    out["first_mb_s"] = statistics.median(r["first_sent"] / r["first_s"] / 1e6 for r in runs)
    out["rclone_mb_s"] = statistics.median(r["repo_bytes"] / r["rclone_s"] / 1e6 for r in runs)
    out["b_ratio"] = statistics.median(r["second_sent"] / r["b_stored"] for r in runs)
    out["first_vs_rclone"] = statistics.median(
        r["first_sent"] / r["first_s"] / (r["repo_bytes"] / r["rclone_s"]) for r in runs)
    out["ceiling_mb_s"] = statistics.median(r["ceiling_sent"] / r["ceiling_s"] / 1e6
                                            for r in runs)
    out["ceiling_parts_mb_s"] = statistics.median(
        r["ceiling_parts_sent"] / r["ceiling_parts_s"] / 1e6 for r in runs)
    out["rclone_wire_mb_s"] = statistics.median(r["repo_apparent"] / r["rclone_s"] / 1e6
                                                for r in runs)
    out["first_vs_ceiling"] = statistics.median(
        r["first_sent"] / r["first_s"] / (r["ceiling_sent"] / r["ceiling_s"]) for r in runs)
    out["rclone_vs_ceiling"] = statistics.median(
        r["repo_apparent"] / r["rclone_s"] / (r["ceiling_sent"] / r["ceiling_s"]) for r in runs)
    out["restore_ratio"] = statistics.median(r["restore_cloud_s"] / r["restore_local_s"]
                                             for r in runs)
    per_gb = {"first_server": ("first_server_cpu", "first_sent"),
              "first_client": ("first_client_cpu", "first_sent"),
              "rclone_server": ("rclone_server_cpu", "repo_apparent"),
              "rclone_client": ("rclone_client_cpu", "repo_apparent")}
    for name, (cpu, sent) in per_gb.items():
        out[f"{name}_s_gb"] = statistics.median(r[cpu] / r[sent] * 1e9 for r in runs)
    # Both tools bound by CPU on the same cores: the best ratio cairn could reach if its own
    # CPU cost nothing is rclone's CPU per byte (server + client) over the server's for cairn.
    out["cpu_bound_best"] = statistics.median(
        (r["rclone_server_cpu"] + r["rclone_client_cpu"]) / r["repo_bytes"]
        / (r["first_server_cpu"] / r["first_sent"]) for r in runs)
    return out


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def table(m: Results, label: str) -> str:
    mb = 1e6
    rows = [
        ("bytes sent, replicate of B / B bytes_stored",
         f"{m['second_sent'] / mb:.1f} / {m['b_stored'] / mb:.1f} MB = {m['b_ratio']:.3f}x",
         f"<= {SECOND_VS_NEW}x", verdict(m["b_ratio"] <= SECOND_VS_NEW)),
        ("bytes sent, first replicate / A bytes_stored",
         f"{m['first_sent'] / mb:.1f} / {m['a_stored'] / mb:.1f} MB", "-", "-"),
        ("first replicate (A)", f"{m['first_s']:.1f} s  {m['first_mb_s']:.0f} MB/s", "-", "-"),
        ("rclone copy of the repository folder",
         f"{m['rclone_s']:.1f} s  {m['rclone_mb_s']:.0f} MB/s "
         f"({m['repo_bytes'] / mb:.0f} MB, {m['repo_files']:.0f} files)", "-", "-"),
        ("rclone bytes sent (apparent size) / on disk",
         f"{m['repo_apparent'] / mb:.0f} / {m['repo_bytes'] / mb:.0f} MB: "
         f"{m['rclone_wire_mb_s']:.0f} MB/s on the wire", "-", "-"),
        (f"server ceiling: raw {PACK_BYTES >> 20} MiB PUTs, {IN_FLIGHT} in flight",
         f"{m['ceiling_s']:.1f} s  {m['ceiling_mb_s']:.0f} MB/s "
         f"({m['ceiling_sent'] / mb:.0f} MB)", "-", "-"),
        (f"the same in {PART_BYTES >> 20} MiB parts, {PARTS_IN_FLIGHT} at once (multipart)",
         f"{m['ceiling_parts_s']:.1f} s  {m['ceiling_parts_mb_s']:.0f} MB/s", "-", "-"),
        ("first replicate / ceiling, rclone (wire) / ceiling",
         f"{m['first_vs_ceiling']:.2f}, {m['rclone_vs_ceiling']:.2f}", "-", "-"),
        ("CPU s per GB sent, server + client: cairn, rclone",
         f"{m['first_server_s_gb']:.1f} + {m['first_client_s_gb']:.1f}, "
         f"{m['rclone_server_s_gb']:.1f} + {m['rclone_client_s_gb']:.1f}", "-", "-"),
        ("best ratio when CPU-bound (cairn's own CPU free)", f"{m['cpu_bound_best']:.2f}x",
         "-", "-"),
        ("first replicate MB/s / rclone MB/s", f"{m['first_vs_rclone']:.2f}x",
         f">= {FIRST_VS_RCLONE}x", verdict(m["first_vs_rclone"] >= FIRST_VS_RCLONE)),
        ("second replicate (B)", f"{m['second_s']:.1f} s", "-", "-"),
        (f"restore B ({label}) from cloud, cold", f"{m['restore_cloud_s']:.1f} s", "-", "-"),
        (f"restore B ({label}) from local, cold", f"{m['restore_local_s']:.1f} s", "-", "-"),
        ("restore cloud / local", f"{m['restore_ratio']:.2f}x",
         f"<= {RESTORE_CLOUD_VS_LOCAL}x", verdict(m["restore_ratio"] <= RESTORE_CLOUD_VS_LOCAL)),
    ]
    head = ("metric", "median", "target", "verdict")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                     for r in [head, *rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="512M images, one run")
    parser.add_argument("--size", help="image size (default 2G, 512M with --quick)")
    parser.add_argument("--repeats", type=int, help="runs (default 3, 1 with --quick)")
    parser.add_argument("--rclone-transfers", type=int, default=4,
                        help="rclone --transfers (default 4, rclone's own default)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: run as root (the benchmark drops the page cache)", file=sys.stderr)
        return 1
    if shutil.which("rclone") is None:
        print("error: no rclone, the throughput reference: apt-get install rclone",
              file=sys.stderr)
        return 1
    size = parse_size(args.size or ("512M" if args.quick else "2G"))
    repeats = args.repeats or (1 if args.quick else 3)
    res: Results = {"image_size": size, "repeats": repeats, "load_before": os.getloadavg(),
                    "rclone_transfers": args.rclone_transfers,
                    "rclone": call(["rclone", "version"]).splitlines()[0]}
    try:
        pair = build(size)
        runs = []
        for n in range(repeats):
            print(f"repeat {n + 1}/{repeats} ...", flush=True)
            with tempfile.TemporaryDirectory(prefix="cloud-run-", dir=WORK) as tmp:
                runs.append(one_repeat(pair, Path(tmp), args.rclone_transfers))
    except (BenchError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    res.update(runs=runs, medians=summarize(runs), load_after=os.getloadavg())
    out = WORK / f"cloud-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(res, indent=1))
    print(table(res["medians"], size_label(size)))
    print(f"load average before {res['load_before']}, after {res['load_after']}; "
          f"repeats {repeats} (medians); JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
