"""Virtualization benchmark: how fast a point becomes a disk, a stream and a verified boot.

Why: issue 4 promises that a recovery point is usable at once whatever its size, because an
export only opens the point's tree. This measures that promise against its targets:
- time from `cairn export` to a ready NBD export (the "exporting" line, and the first
  `nbdinfo` that answers, both from process start) for a point of SIZE and a sparse point of
  BIG (SIZE's content in its first bytes): under 0.5 s and the same for both; `cairn clone`
  of both (constant time);
- sequential read of an exported point (`nbdcopy ... null:`, to a file, `qemu-img convert`)
  against reading the raw image (`cat`, cold and warm page cache): at least 50% of raw;
  `qemu-nbd` serving the raw file is shown beside it, to separate NBD's cost from cairn's;
- time to a verified screenshot of a small bootable machine (`cairn screenshot-verify`).

Every figure is the median of `--repeats` runs (the machine is shared); the load average is
recorded before and after. Warm and cold `nbdcopy` are also timed each right after a `cat`,
pair by pair with the load at each (`--reads-only`: only those, a short run), since the
load on a shared machine moves between phases. Results go to `bench/work/virt-<time>.json`.

Run as root (it drops the page cache): `.venv/bin/python bench/virt_bench.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from images import WORK, BenchError, build, parse_size, size_label  # noqa: E402
from tools import CAIRN, call, drop_caches  # noqa: E402

from tests.virt.bootable_image import build_bootable_image  # noqa: E402

Results = dict[str, Any]
READY_TIMEOUT = 60.0


def free_port() -> int:
    """A free TCP port on loopback (released before the export binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cairn(*args: str | Path) -> str:
    return call([CAIRN, *args])


def cairn_json(*args: str | Path) -> Any:
    return json.loads(cairn(*args, "--json"))


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def stopped(process: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; always reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def export(repo: Path, point: str,
           probe_args: tuple[str, ...] = ()) -> Iterator[tuple[str, float, float, float, int]]:
    """Start `cairn export` and yield (url, line_s, probe_s, last_probe_call_s, pid).

    `line_s` is when the "exporting" line arrived, `probe_s` when the first `nbdinfo` (with
    `probe_args`) that answered returned, both from just before the process was started.
    `nbdinfo` is polled from the start, so the second figure is what a client that retries
    would see. Plain `nbdinfo` spends about 0.2 s of its own even on a ready server;
    `nbdinfo --size` is a bare handshake.
    """
    port = free_port()
    urls: list[str] = []
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(CAIRN), "export", "--repo", str(repo), point, "--nbd", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line_at: list[float] = []

    def read_line() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("exporting") and not line_at:
                line_at.append(time.perf_counter() - start)
                urls.append(line.split(" at ")[1].split()[0])  # the name is a secret

    reader = threading.Thread(target=read_line, daemon=True)
    reader.start()
    try:
        while True:
            began = time.perf_counter()
            url = urls[0] if urls else f"nbd://127.0.0.1:{port}"
            probe = subprocess.run(["nbdinfo", *probe_args, url], capture_output=True, check=False)
            ended = time.perf_counter()
            if probe.returncode == 0:
                break
            if process.poll() is not None:
                raise BenchError(f"cairn export exited {process.returncode}: "
                                 f"{process.stderr.read().strip() if process.stderr else ''}")
            if ended - start > READY_TIMEOUT:
                raise BenchError(f"export of {point} not ready in {READY_TIMEOUT:.0f} s")
            time.sleep(0.005)
        deadline = time.perf_counter() + 5
        while not line_at and time.perf_counter() < deadline:
            time.sleep(0.001)
        yield (url, line_at[0] if line_at else float("nan"), ended - start, ended - began,
               process.pid)
    finally:
        stopped(process)


def readiness(repo: Path, point: str, repeats: int) -> Results:
    """Export start-up, once polled with plain `nbdinfo`, once with a bare handshake."""
    lines, answers, calls, handshakes = [], [], [], []
    for _ in range(repeats):
        with export(repo, point) as (_url, line_s, answer_s, call_s, _pid):
            lines.append(line_s)
            answers.append(answer_s)
            calls.append(call_s)
        with export(repo, point, ("--size",)) as (_url, line_s, answer_s, _call_s, _pid):
            lines.append(line_s)
            handshakes.append(answer_s)
    return {"line_s": median(lines), "nbdinfo_s": median(answers),
            "nbdinfo_call_s": median(calls), "handshake_s": median(handshakes),
            "line_samples": lines, "nbdinfo_samples": answers, "handshake_samples": handshakes}


def clone_times(repo: Path, point: str, repeats: int) -> Results:
    samples = []
    for n in range(repeats):
        name = f"bench-{point}-{n}"
        start = time.perf_counter()
        cairn("clone", "--repo", repo, point, "--name", name)
        samples.append(time.perf_counter() - start)
        cairn("clone-rm", "--repo", repo, name)
    return {"clone_s": median(samples), "clone_samples": samples}


def timed_runs(action: Callable[[], object], repeats: int, cold: bool,
               after: Callable[[], object] | None = None, warm_up: bool = True) -> list[float]:
    """Wall seconds of `action` per run; cold runs drop the page cache first.

    Warm runs do one untimed run first (unless `warm_up` is False: the caller warmed it),
    so the first timed one is warm too.
    """
    if not cold and warm_up:
        action()
        if after:
            after()
    samples = []
    for _ in range(repeats):
        if cold:
            drop_caches()
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
        if after:
            after()
    return samples


def run(*argv: str | Path) -> None:
    call(list(argv))


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a process has used so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cold_nbdcopy(repo: Path, point: str, repeats: int,
                 server_cpu: list[float] | None = None) -> list[float]:
    """`nbdcopy` with the page cache dropped, each run on a fresh export: an export keeps
    the blocks it decoded, so a second run on the same one would be served from memory.
    The export's CPU seconds per copy go to ``server_cpu`` when given."""
    samples: list[float] = []
    for _ in range(repeats):
        with export(repo, point) as (url, *_, pid):
            before = cpu_seconds(pid)
            samples += timed_runs(lambda url=url: run("nbdcopy", url, "null:"), 1, cold=True)
            if server_cpu is not None:
                server_cpu.append(cpu_seconds(pid) - before)
    return samples


def throughput(repo: Path, point: str, image: Path, out: Path, repeats: int) -> Results:
    """Seconds and MB/s of each way of reading the whole point, and of the raw image."""
    size = image.stat().st_size
    figures: dict[str, list[float]] = {}

    def cat() -> None:
        with image.open("rb") as f:
            subprocess.run(["cat"], stdin=f, stdout=subprocess.DEVNULL, check=True)

    def rm_out() -> None:
        out.unlink(missing_ok=True)

    figures["raw cat cold"] = timed_runs(cat, repeats, cold=True)
    figures["raw cat warm"] = timed_runs(cat, repeats, cold=False)
    figures["cairn restore warm"] = timed_runs(
        lambda: cairn("restore", "--repo", repo, point, out), repeats, cold=False, after=rm_out)
    figures["nbdcopy null: cold"] = cold_nbdcopy(repo, point, repeats)
    with export(repo, point) as (url, *_):
        figures["nbdcopy null: warm"] = timed_runs(
            lambda: run("nbdcopy", url, "null:"), repeats, cold=False)
        figures["nbdcopy --no-extents null: warm"] = timed_runs(
            lambda: run("nbdcopy", "--no-extents", url, "null:"), repeats, cold=False)
        figures["nbdcopy --connections=1 null: warm"] = timed_runs(
            lambda: run("nbdcopy", "--connections=1", url, "null:"), repeats, cold=False)
        figures["nbdcopy to file warm"] = timed_runs(
            lambda: run("nbdcopy", url, out), repeats, cold=False, after=rm_out)
        figures["qemu-img convert -O raw warm"] = timed_runs(
            lambda: run("qemu-img", "convert", "-O", "raw", url, out), repeats,
            cold=False, after=rm_out)
    port = free_port()
    raw = subprocess.Popen(["qemu-nbd", "-r", "-f", "raw", "-b", "127.0.0.1", "-p", str(port),
                            "-t", str(image)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        raw_url = f"nbd://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while subprocess.run(["nbdinfo", "--size", raw_url], capture_output=True,
                             check=False).returncode:
            if time.monotonic() > deadline or raw.poll() is not None:
                raise BenchError("qemu-nbd did not start: is qemu-utils installed?")
            time.sleep(0.05)
        figures["qemu-nbd(raw) nbdcopy null: warm"] = timed_runs(
            lambda: run("nbdcopy", raw_url, "null:"), repeats, cold=False)
    finally:
        stopped(raw)
    return {name: {"s": median(s), "mb_s": size / median(s) / 1e6, "samples": s}
            for name, s in figures.items()}


def paired_reads(repo: Path, point: str, image: Path, repeats: int) -> Results:
    """Warm and cold `nbdcopy ... null:` each timed right after a `cat` of the raw image,
    pair by pair, with the load at each: on a shared machine the load moves between the
    phases of `throughput`, and a ratio of runs made seconds apart is the fairer one.
    Cold pairs drop the page cache before each run, and each cold copy has a fresh export
    (an export keeps what it decoded). Each pair also has the export's CPU seconds for
    the copy (``server_cpu_s``): what the load does not change."""

    def cat() -> None:
        with image.open("rb") as f:
            subprocess.run(["cat"], stdin=f, stdout=subprocess.DEVNULL, check=True)

    pairs: dict[str, list[dict[str, float]]] = {"warm": [], "cold": []}
    with export(repo, point) as (url, *_, pid):
        run("nbdcopy", url, "null:")
        cat()
        for _ in range(repeats):
            load = os.getloadavg()[0]
            raw = timed_runs(cat, 1, cold=False, warm_up=False)[0]
            before = cpu_seconds(pid)
            copy = timed_runs(lambda url=url: run("nbdcopy", url, "null:"), 1, cold=False,
                              warm_up=False)[0]
            pairs["warm"].append({"cat_s": raw, "nbdcopy_s": copy, "load": load,
                                  "server_cpu_s": cpu_seconds(pid) - before})
    for _ in range(repeats):
        load = os.getloadavg()[0]
        raw = timed_runs(cat, 1, cold=True)[0]
        cpu: list[float] = []
        copy = cold_nbdcopy(repo, point, 1, cpu)[0]
        pairs["cold"].append({"cat_s": raw, "nbdcopy_s": copy, "load": load,
                              "server_cpu_s": cpu[0]})
    return {mode: {"share": median([p["cat_s"] / p["nbdcopy_s"] for p in runs]),
                   "shares": [p["cat_s"] / p["nbdcopy_s"] for p in runs],
                   "server_cpu_s": median([p["server_cpu_s"] for p in runs]), "pairs": runs}
            for mode, runs in pairs.items()}


def sparse_big(image: Path, big: Path, size: int) -> Path:
    """A sparse image of `size` bytes whose first bytes are `image`'s content."""
    big.unlink(missing_ok=True)
    run("cp", "--sparse=always", image, big)
    with big.open("r+b") as f:
        f.truncate(size)
    return big


def screenshot(repo: Path, boot_image: Path, repeats: int) -> Results:
    if not boot_image.exists():
        print("building the bootable test machine ...", flush=True)
        build_bootable_image(boot_image)
    point = cairn_json("backup", "--repo", repo, "--volume", "boot", boot_image)["point"]
    walls, reported, records = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([str(CAIRN), "screenshot-verify", "--repo", str(repo), point,
                               "--json"], capture_output=True, text=True, check=False)
        walls.append(time.perf_counter() - start)
        if not done.stdout.strip():
            raise BenchError(f"screenshot-verify printed nothing: {done.stderr.strip()}")
        record = json.loads(done.stdout)
        records.append(record)
        reported.append(float(record["seconds"]))
    return {"wall_s": median(walls), "reported_s": median(reported), "wall_samples": walls,
            "statuses": [r["status"] for r in records], "accel": records[-1]["accel"]}


def targets(res: Results) -> list[tuple[str, str, str, str]]:
    """(metric, value, target, verdict) rows for the table."""
    rows = paired_rows(res["paired"]) if "paired" in res else []
    if "ready" not in res:
        return rows
    small, big = res["ready"]["small"], res["ready"]["big"]
    for label, part in (("small", small), ("big", big)):
        name = res["labels"][label]
        rows.append((f"export ready, line ({name})", f"{part['line_s']:.3f} s", "< 0.5 s",
                     "ok" if part["line_s"] < 0.5 else "MISS"))
        rows.append((f"export ready, handshake answers ({name})", f"{part['handshake_s']:.3f} s",
                     "< 0.5 s", "ok" if part["handshake_s"] < 0.5 else "MISS"))
        rows.append((f"export ready, nbdinfo answers ({name})", f"{part['nbdinfo_s']:.3f} s",
                     "< 0.5 s", "ok" if part["nbdinfo_s"] < 0.5 else "MISS"))
    ratio = big["nbdinfo_s"] / small["nbdinfo_s"]
    rows.append(("export ready big/small (nbdinfo)", f"{ratio:.2f}x", "~1.0x (same)",
                 "ok" if ratio < 1.25 else "MISS"))
    rows.append(("nbdinfo call itself (ready server)", f"{small['nbdinfo_call_s']:.3f} s",
                 "-", "-"))
    for label in ("small", "big"):
        c = res["clone"][label]["clone_s"]
        rows.append((f"cairn clone ({res['labels'][label]})", f"{c:.3f} s", "constant", "-"))
    cr = res["clone"]["big"]["clone_s"] / res["clone"]["small"]["clone_s"]
    rows.append(("clone big/small", f"{cr:.2f}x", "~1.0x", "ok" if cr < 1.25 else "MISS"))
    tp = res["throughput"]
    for name, fig in tp.items():
        rows.append((f"read {res['labels']['small']}: {name}",
                     f"{fig['s']:.2f} s  {fig['mb_s']:.0f} MB/s", "-", "-"))
    for mode in ("cold", "warm"):
        share = tp[f"nbdcopy null: {mode}"]["mb_s"] / tp[f"raw cat {mode}"]["mb_s"]
        rows.append((f"nbdcopy null: / raw cat ({mode})", f"{share:.0%}", ">= 50%",
                     "ok" if share >= 0.5 else "MISS"))
    if "screenshot" in res:
        shot = res["screenshot"]
        rows.append((f"screenshot-verify ({shot['accel']}, {'/'.join(shot['statuses'])})",
                     f"{shot['wall_s']:.1f} s (reported {shot['reported_s']:.1f} s)", "-", "-"))
    return rows


def paired_rows(paired: Results) -> list[tuple[str, str, str, str]]:
    rows = []
    for mode, part in paired.items():
        spread = ", ".join(f"{p['cat_s'] / p['nbdcopy_s']:.0%} ({p['cat_s']:.2f}/"
                           f"{p['nbdcopy_s']:.2f} s, load {p['load']:.1f}, server CPU "
                           f"{p['server_cpu_s']:.2f} s)" for p in part["pairs"])
        rows.append((f"nbdcopy null: / raw cat ({mode}, side by side)", f"{part['share']:.0%}",
                     ">= 50%" if mode == "warm" else ">= 100%",
                     "ok" if part["share"] >= (0.5 if mode == "warm" else 1.0) else "MISS"))
        rows.append((f"  pairs ({mode})", spread, "-", "-"))
    return rows


def table(rows: list[tuple[str, str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("metric", "median", "target", "verdict")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def bench(args: argparse.Namespace) -> Results:
    size = parse_size(args.size or ("512M" if args.quick else "2G"))
    big_size = parse_size(args.big or ("5G" if args.quick else "20G"))
    repeats = args.repeats or (1 if args.quick else 3)
    pair = build(size)
    res: Results = {"image_size": size, "big_size": big_size, "repeats": repeats,
                    "load_before": os.getloadavg(),
                    "labels": {"small": size_label(size), "big": size_label(big_size)}}
    WORK.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="virt-run-", dir=WORK))
    try:
        repo = tmp / "repo"
        cairn("init", "--repo", repo)
        if args.reads_only:
            point = cairn_json("backup", "--repo", repo, "--volume", "small", pair.a)["point"]
            print("measuring warm and cold reads against cat, side by side ...", flush=True)
            res["paired"] = paired_reads(repo, point, pair.a, repeats)
            return res
        big = sparse_big(pair.a, tmp / "big.img", big_size)
        points = {}
        for label, image in (("small", pair.a), ("big", big)):
            report = cairn_json("backup", "--repo", repo, "--volume", label, image)
            points[label] = report["point"]
            res[f"backup_{label}"] = report
        big.unlink()
        print(f"points: {points}; measuring export readiness ...", flush=True)
        res["ready"] = {k: readiness(repo, p, repeats) for k, p in points.items()}
        res["clone"] = {k: clone_times(repo, p, repeats) for k, p in points.items()}
        print("measuring read throughput ...", flush=True)
        res["throughput"] = throughput(repo, points["small"], pair.a, tmp / "out.img", repeats)
        res["paired"] = paired_reads(repo, points["small"], pair.a, repeats)
        if not args.no_screenshot:
            print("measuring screenshot-verify ...", flush=True)
            res["screenshot"] = screenshot(repo, WORK / "bootable.img", repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        res["load_after"] = os.getloadavg()
    return res


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="512M and 5G points, one run each")
    parser.add_argument("--size", help="image size (default 2G, 512M with --quick)")
    parser.add_argument("--big", help="sparse point size (default 20G, 5G with --quick)")
    parser.add_argument("--repeats", type=int, help="runs per figure (default 3, 1 with --quick)")
    parser.add_argument("--no-screenshot", action="store_true", help="skip screenshot-verify")
    parser.add_argument("--reads-only", action="store_true",
                        help="only warm and cold nbdcopy against cat, side by side")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: run as root (the benchmark drops the page cache)", file=sys.stderr)
        return 1
    try:
        res = bench(args)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    out = WORK / f"virt-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(res, indent=1))
    print(table(targets(res)))
    print(f"load average before {res['load_before']}, after {res['load_after']}; "
          f"repeats {res['repeats']} (medians); JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
