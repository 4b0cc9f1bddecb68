"""Side-by-side store benchmark: cairn against restic and borg on a realistic image pair.

Why: cairn's claims are relative ("incremental with changed ranges at least 10x faster than
restic and borg", "restore within 3x of cp"), so one script measures every tool the same way
on the same images and checks those targets. Every timed phase starts with a cold page cache
(`sync; echo 3 > /proc/sys/vm/drop_caches`) and ends with `sync`, so writes the tool left in
memory are paid for; times are wall clock of the whole command, process start included.

Phases: `cp` of image A (the physical anchor); per tool, full backup of A, incremental of B,
restore of the oldest point (checked byte for byte), delete of the oldest point and getting
the space back; then, cairn only, (a) restore of the oldest of 50 points against the newest
(49 steps of small rewrites of existing data in between, so both hold as much data), (b) the
time to delete one point as a volume grows to 10, 50, 100 and 200 points, (c) a backup with
an empty changed-ranges list.

Run as root: `.venv/bin/python bench/store_bench.py [--quick]`. Results are written to
`bench/work/results-SIZE-TIMESTAMP.json` and summarised on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import images
from churn import Churn
from images import WORK, BenchError
from tools import CAIRN, Borg, Cairn, Restic, Tool, call, same_bytes, timed

Results = dict[str, Any]
SAMPLES = 3  # deletes timed per point count of the delete curve


def attempt(record: Results, key: str, action: Callable[[], Any]) -> Any:
    """Run one phase; a failure is recorded under `errors` and the run goes on."""
    try:
        return action()
    except (BenchError, OSError, ValueError, KeyError) as error:
        record.setdefault("errors", {})[key] = str(error)
        print(f"  {key}: FAILED: {error}", flush=True)
        return None


def cp_anchor(image: Path, run: Path) -> float:
    """`cp` of image A to the same disk: the floor any restore is measured against."""
    dest = run / "cp.img"
    _, seconds = timed(lambda: call(["cp", image, dest]))
    dest.unlink()
    return seconds


def compare_tool(
    tool: Tool, pair: images.ImagePair, run: Path, changed: bool, restore: bool = True
) -> Results:
    """Full backup of A, incremental of B, restore and delete of the oldest point."""
    record: Results = {}
    print(f"{tool.name}:", flush=True)
    attempt(record, "init", tool.init)
    oldest, record["full_s"] = timed(lambda: tool.backup(pair.a))
    record["stored_after_full"] = tool.stored_bytes()
    if isinstance(tool, Cairn):
        record["full_report"] = tool.last
    print(f"  full {record['full_s']:.2f} s", flush=True)
    ranges = pair.changed if changed else None
    _, record["incremental_s"] = timed(lambda: tool.backup(pair.b, ranges))
    record["stored"] = tool.stored_bytes()
    if isinstance(tool, Cairn):
        record["incremental_report"] = tool.last
    print(f"  incremental {record['incremental_s']:.2f} s", flush=True)
    if isinstance(tool, Cairn) and changed:
        record.update(attempt(record, "no_change", lambda: no_change(tool, pair.b, run)) or {})
    if not restore:
        return record
    dest = run / "restore.img"
    result = attempt(record, "restore", lambda: timed(lambda: tool.restore(oldest, dest)))
    if result is not None:
        record["restore_oldest_s"] = result[1]
        record["restore_identical"] = same_bytes(dest, pair.a)
        print(
            f"  restore oldest {result[1]:.2f} s, identical: {record['restore_identical']}",
            flush=True,
        )
        dest.unlink()
    before = tool.stored_bytes()
    result = attempt(record, "delete", lambda: timed(lambda: tool.delete(oldest)))
    if result is not None:
        record["delete_oldest_s"] = result[1]
        record["reclaimed"] = before - tool.stored_bytes()
        print(
            f"  delete oldest {result[1]:.2f} s, reclaimed {record['reclaimed'] / 2**20:.1f} MiB",
            flush=True,
        )
    return record


def no_change(tool: Cairn, image: Path, run: Path) -> Results:
    """(c) A backup whose changed-ranges list is empty: it should cost almost nothing."""
    empty = run / "empty-ranges.json"
    empty.write_text("[]")
    record: Results = {}
    for cache in ("cold", "warm"):
        before = tool.stored_bytes()
        _, seconds = timed(lambda: tool.backup(image, empty), cold=cache == "cold")
        record |= {
            f"no_change_{cache}_wall_s": seconds,
            f"no_change_{cache}_reported_s": tool.last.get("seconds"),
            f"no_change_{cache}_bytes_stored": tool.last.get("bytes_stored"),
            f"no_change_{cache}_bytes_read": tool.last.get("bytes_read"),
            f"no_change_{cache}_repo_growth": tool.stored_bytes() - before,
        }
    print(f"  no-change backup: {record}", flush=True)
    return record


def fifty_points(image: Path, run: Path, points: int = 50, repeats: int = 3) -> Results:
    """(a) Restore of the oldest of `points` points against the newest: no chain to replay."""
    print(f"cairn, {points} points:", flush=True)
    work = run / "churn.img"
    call(["cp", "--sparse=always", image, work])
    tool = Cairn(run, "cairn-50")
    tool.init()
    ids = [tool.backup(work)]
    churn, ranges = Churn(work, data_only=True), run / "churn-ranges.json"
    backup_s = []
    for _ in range(points - 1):
        churn.step(ranges)
        start = time.perf_counter()
        ids.append(tool.backup(work, ranges))
        backup_s.append(time.perf_counter() - start)
    dest = run / "restore.img"
    times: dict[str, list[float]] = {"oldest": [], "newest": []}
    identical = {}
    for _ in range(repeats):
        for which, point, truth in (("oldest", ids[0], image), ("newest", ids[-1], work)):
            times[which].append(timed(lambda p=point: tool.restore(p, dest))[1])
            identical[which] = same_bytes(dest, truth)
            dest.unlink()
    oldest, newest = statistics.median(times["oldest"]), statistics.median(times["newest"])
    # Rewrites of existing data keep every point as large as the first; per byte of data
    # too, should a point still hold more than another.
    held = {str(p["id"]): int(p["allocated"]) for p in tool.points()}
    record = {
        "points": points,
        "restore_oldest_s": times["oldest"],
        "restore_newest_s": times["newest"],
        "oldest_over_newest": oldest / newest,
        "data_oldest": held[ids[0]],
        "data_newest": held[ids[-1]],
        "oldest_over_newest_per_byte": (oldest / held[ids[0]]) / (newest / held[ids[-1]]),
        "identical": identical,
        "stored": tool.stored_bytes(),
        "small_backup_median_s": statistics.median(backup_s),
        "small_backup_max_s": max(backup_s),
    }
    print(
        f"  restore oldest {oldest:.2f} s ({held[ids[0]] >> 20} MiB of data), newest "
        f"{newest:.2f} s ({held[ids[-1]] >> 20} MiB) (medians of {repeats}), "
        f"identical {identical}; small backups median {record['small_backup_median_s']:.2f} s",
        flush=True,
    )
    shutil.rmtree(tool.repo)
    work.unlink()
    return record


def delete_curve(
    tool: Tool, image: Path, run: Path, counts: list[int], size: int = 256 * 2**20
) -> Results:
    """(b) Time to delete a point (the oldest, and one in the middle) as points accumulate;
    each figure is the median of SAMPLES deletes, since one cold delete of 0.2 s moves by
    a few hundredths with the disk."""
    print(f"{tool.name}, delete curve on {size // 2**20} MiB:", flush=True)
    work = run / f"curve-{tool.name}.img"
    with image.open("rb") as src, work.open("wb") as out:
        out.write(src.read(size))
    tool.init()
    churn, ranges = Churn(work, seed=2), run / "curve-ranges.json"
    ids = [tool.backup(work)]
    curve = []
    for count in counts:
        while len(ids) < count:
            churn.step(ranges)
            ids.append(tool.backup(work, ranges))
        middle_s = statistics.median(
            timed(lambda: tool.delete(ids.pop(len(ids) // 2)))[1] for _ in range(SAMPLES))
        oldest_s = statistics.median(
            timed(lambda: tool.delete(ids.pop(0)))[1] for _ in range(SAMPLES))
        curve.append({"points": count, "delete_middle_s": middle_s, "delete_oldest_s": oldest_s})
        print(
            f"  {count} points: delete middle {middle_s:.3f} s, oldest {oldest_s:.3f} s", flush=True
        )
    work.unlink()
    return {"image_bytes": size, "curve": curve}


def lineup(run: Path, chosen: set[str]) -> list[tuple[Tool, bool, bool]]:
    """The tools to compare, each with (use changed ranges, restore and delete)."""
    tools: list[tuple[Tool, bool, bool]] = []
    if "cairn" in chosen:
        tools += [(Cairn(run), True, True), (Cairn(run, "cairn-scan"), False, False)]
    if "restic" in chosen:
        tools.append((Restic(run), False, True))
    if "borg" in chosen:
        tools.append((Borg(run), False, True))
    return tools


def medians(records: list[Results]) -> Results:
    """One record from repeated rounds: the median of every number, the last of the rest.

    The machine is shared, so one round can be slowed by a neighbour; the median of an odd
    number of rounds drops such outliers. Every round is kept under `rounds`.
    """
    merged: Results = {}
    for key in {k for record in records for k in record}:
        values = [r[key] for r in records if key in r]
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        merged[key] = statistics.median(numbers) if len(numbers) == len(values) else values[-1]
    merged["rounds"] = records
    return merged


def ratio(slow: float | None, fast: float | None) -> float | None:
    """How many times faster `fast` is than `slow`; None when either is missing."""
    return slow / fast if slow and fast else None


def targets(results: Results) -> list[tuple[str, float | None, str, bool | None]]:
    """The goals from the design, each as (name, measured, goal, met)."""
    tools = results["tools"]

    def t(name: str, key: str) -> float | None:
        return tools.get(name, {}).get(key)

    rows: list[tuple[str, float | None, str, bool | None]] = []

    def goal(name: str, value: float | None, text: str, check: Callable[[float], bool]) -> None:
        rows.append((name, value, text, None if value is None else check(value)))

    goal(
        "incr (ranges): restic / cairn",
        ratio(t("restic", "incremental_s"), t("cairn", "incremental_s")),
        ">= 10x",
        lambda v: v >= 10,
    )
    goal(
        "incr (ranges): borg / cairn",
        ratio(t("borg", "incremental_s"), t("cairn", "incremental_s")),
        ">= 10x",
        lambda v: v >= 10,
    )
    goal(
        "incr (full scan): borg / cairn",
        ratio(t("borg", "incremental_s"), t("cairn-scan", "incremental_s")),
        ">= 2x",
        lambda v: v >= 2,
    )
    goal(
        "full: borg / cairn",
        ratio(t("borg", "full_s"), t("cairn", "full_s")),
        ">= 1x",
        lambda v: v >= 1,
    )
    goal(
        "restore: restic / cairn",
        ratio(t("restic", "restore_oldest_s"), t("cairn", "restore_oldest_s")),
        ">= 1.5x",
        lambda v: v >= 1.5,
    )
    goal(
        "restore: borg / cairn",
        ratio(t("borg", "restore_oldest_s"), t("cairn", "restore_oldest_s")),
        ">= 1.5x",
        lambda v: v >= 1.5,
    )
    goal(
        "restore: cairn / cp",
        ratio(t("cairn", "restore_oldest_s"), results.get("cp_s")),
        "<= 3x",
        lambda v: v <= 3,
    )
    goal(
        "delete oldest + reclaim: wall s",
        t("cairn", "delete_oldest_s"),
        "< 0.2 s",
        lambda v: v < 0.2,
    )
    rows_by_count = ((results.get("delete_curve") or {}).get("cairn-curve") or {}).get("curve")
    goal(  # constant as points accumulate: the last count's deletes against the first's
        "delete curve: most points / fewest",
        max(rows_by_count[-1][key] / rows_by_count[0][key]
            for key in ("delete_middle_s", "delete_oldest_s")) if rows_by_count else None,
        "<= 1.3x",
        lambda v: v <= 1.3,
    )
    fifty = results.get("fifty_points") or {}
    goal(
        "50 points: restore oldest / newest",
        fifty.get("oldest_over_newest"),
        "within 10%",
        lambda v: abs(v - 1) <= 0.10,
    )
    goal(
        "50 points: same, per byte of data",
        fifty.get("oldest_over_newest_per_byte"),
        "within 10%",
        lambda v: abs(v - 1) <= 0.10,
    )
    goal(
        "no-change backup: stored bytes",
        t("cairn", "no_change_cold_bytes_stored"),
        "< 64 KiB",
        lambda v: v < 65536,
    )
    goal(
        "no-change backup: repo growth",
        t("cairn", "no_change_cold_repo_growth"),
        "< 64 KiB",
        lambda v: v < 65536,
    )
    goal(
        "no-change backup: wall s (cold)",
        t("cairn", "no_change_cold_wall_s"),
        "< 0.2 s",
        lambda v: v < 0.2,
    )
    goal(
        "no-change backup: wall s (warm)",
        t("cairn", "no_change_warm_wall_s"),
        "< 0.2 s",
        lambda v: v < 0.2,
    )
    goal(
        "no-change backup: reported s",
        t("cairn", "no_change_cold_reported_s"),
        "< 0.2 s",
        lambda v: v < 0.2,
    )
    return rows


def summary(results: Results) -> str:
    """The readable table: one row per tool, then the targets, then the curve."""
    lines = [
        f"image {results['image_size'] // 2**20} MiB, {results['changed_bytes'] / 2**20:.1f}"
        f" MiB changed A->B; cold cache per phase: {results['cold_cache']}; medians of "
        f"{len(results['cp_samples'])} round(s)",
        f"{'tool':<11}{'full s':>9}{'incr s':>9}{'restore s':>11}{'delete s':>10}"
        f"{'stored MiB':>12}{'reclaimed MiB':>15}",
    ]

    def cell(value: float | None, width: int, scale: float = 1, digits: int = 2) -> str:
        return f"{value / scale:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    for name, row in results["tools"].items():
        lines.append(
            f"{name:<11}{cell(row.get('full_s'), 9)}"
            f"{cell(row.get('incremental_s'), 9)}{cell(row.get('restore_oldest_s'), 11)}"
            f"{cell(row.get('delete_oldest_s'), 10)}"
            f"{cell(row.get('stored'), 12, 2**20, 1)}"
            f"{cell(row.get('reclaimed'), 15, 2**20, 1)}"
        )
    lines.append(f"{'cp':<11}{cell(results.get('cp_s'), 9)}")
    lines.append("")
    lines.append(f"{'target':<38}{'measured':>12}  {'goal':<11}met")
    for name, value, text, met in targets(results):
        shown = f"{value:>12.3f}" if value is not None else f"{'-':>12}"
        lines.append(f"{name:<38}{shown}  {text:<11}{'-' if met is None else met}")
    for name, curve in (results.get("delete_curve") or {}).items():
        if curve:
            lines.append("")
            lines.append(f"delete curve ({name}, {curve['image_bytes'] // 2**20} MiB image):")
            lines.extend(
                f"  {p['points']:>4} points: middle {p['delete_middle_s']:.3f} s, "
                f"oldest {p['delete_oldest_s']:.3f} s"
                for p in curve["curve"]
            )
    return "\n".join(lines)


def versions() -> dict[str, str]:
    """Tool versions for the record."""
    found = {}
    for name, argv in (
        ("restic", ["restic", "version"]),
        ("borg", ["borg", "--version"]),
        ("cairn", [str(CAIRN), "--version"]),
    ):
        if shutil.which(argv[0]) is None:  # a cairn-only run on a machine without the peers
            found[name] = "not installed"
            continue
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        found[name] = (done.stdout or done.stderr).strip()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="512M images and a delete curve to 50 points"
    )
    parser.add_argument("--size", help="image size (default 2G, or 512M with --quick)")
    parser.add_argument(
        "--tools", default="cairn,restic,borg", help="comma-separated subset of cairn,restic,borg"
    )
    parser.add_argument(
        "--curve-peers",
        action="store_true",
        help="also measure the delete curve for restic and borg (slow)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of the tool comparison; medians are reported (default 1)",
    )
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: fifty,curve")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: run as root (drop_caches, image building): sudo it", file=sys.stderr)
        return 1
    chosen = set(args.tools.split(","))
    skip = set(args.skip.split(","))
    size = images.parse_size(args.size or ("512M" if args.quick else "2G"))
    counts = [10, 50] if args.quick else [10, 50, 100, 200]
    run = WORK / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    try:
        pair = images.build(size)
        results: Results = {
            "image_size": size,
            "changed_bytes": pair.changed_bytes,
            "cold_cache": True,
            "versions": versions(),
            "settings": "restic: compression auto, encrypted (cannot be off); "
            "borg: -e none, -C zstd,1, extract --sparse; "
            "cairn: CLI defaults",
        }
        cp_samples: list[float] = []
        samples: dict[str, list[Results]] = {}
        for rep in range(args.repeat):
            print(f"--- round {rep + 1} of {args.repeat}", flush=True)
            cp_samples.append(cp_anchor(pair.a, run))
            print(f"cp: {cp_samples[-1]:.2f} s", flush=True)
            for tool, changed, restore in lineup(run, chosen):
                record: Results = {}
                record = (
                    attempt(
                        record,
                        tool.name,
                        lambda t=tool, c=changed, r=restore: compare_tool(t, pair, run, c, r),
                    )
                    or record
                )
                samples.setdefault(tool.name, []).append(record)
        results["cp_s"] = statistics.median(cp_samples)
        results["cp_samples"] = cp_samples
        results["tools"] = {name: medians(records) for name, records in samples.items()}
        if "cairn" in chosen and "fifty" not in skip:
            results["fifty_points"] = attempt(
                results, "fifty_points", lambda: fifty_points(pair.a, run)
            )
        results["delete_curve"] = {}
        if "curve" not in skip:
            curve_tools: list[Tool] = [Cairn(run, "cairn-curve")] if "cairn" in chosen else []
            if args.curve_peers:
                curve_tools += [t for t in (Restic(run), Borg(run)) if t.name in chosen]
            for tool in curve_tools:
                results["delete_curve"][tool.name] = attempt(
                    results,
                    f"curve-{tool.name}",
                    lambda t=tool: delete_curve(t, pair.a, run, counts),
                )
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(run, ignore_errors=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = WORK / f"results-{images.size_label(size)}-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print()
    print(summary(results))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
