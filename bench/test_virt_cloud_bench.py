"""Checks that the virt and cloud benchmarks measure real things, on a few MiB.

Run: `.venv/bin/pytest bench/test_virt_cloud_bench.py` (as root: the cloud round drops the
page cache; SeaweedFS, rclone, nbdinfo and the cairn CLI are run for real, so a broken driver
fails here rather than ten minutes into a full run).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_bench import one_repeat, summarize
from cloud_bench import table as cloud_table
from images import ImagePair
from tools import CAIRN, call
from virt_bench import clone_times, cpu_seconds, export, readiness, sparse_big

MiB = 2**20


@pytest.fixture
def work() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cairn-vcbench-test-") as tmp:
        yield Path(tmp)


def image(path: Path, size: int, seed: int) -> Path:
    """Pages of one byte value with holes between them, like a half-full disk."""
    data = bytearray(size)
    for n, offset in enumerate(range(0, size, 3 * 65536)):
        data[offset : offset + 65536] = bytes([(seed + n) % 251 + 1]) * 65536
    path.write_bytes(bytes(data))
    return path


def test_sparse_big_keeps_the_content_and_costs_no_space(work: Path) -> None:
    small = image(work / "small.img", 2 * MiB, 1)
    big = sparse_big(small, work / "big.img", 1024 * MiB)
    assert big.stat().st_size == 1024 * MiB
    assert big.stat().st_blocks * 512 < 8 * MiB
    with big.open("rb") as f:
        assert f.read(2 * MiB) == small.read_bytes()
        f.seek(512 * MiB)
        assert f.read(MiB) == bytes(MiB)


def test_export_is_timed_from_start_and_serves_the_point(work: Path) -> None:
    repo = work / "repo"
    call([CAIRN, "init", "--repo", repo])
    src = image(work / "a.img", 4 * MiB, 2)
    point = json.loads(call([CAIRN, "backup", "--repo", repo, "--volume", "v", src, "--json"]))
    with export(repo, point["point"]) as (url, line_s, probe_s, call_s, pid):
        assert 0 < line_s < 30 and line_s <= probe_s + 0.5 and 0 < call_s <= probe_s
        out = work / "copy.img"
        before = cpu_seconds(pid)
        call(["nbdcopy", url, out])
        assert out.read_bytes() == src.read_bytes()
        assert 0 < before <= cpu_seconds(pid)  # the export's own CPU (10 ms ticks)
    ready = readiness(repo, point["point"], 1)
    assert not math.isnan(ready["line_s"]) and ready["handshake_s"] < ready["nbdinfo_s"] + 1
    assert clone_times(repo, point["point"], 1)["clone_s"] > 0
    assert "bench-" not in call([CAIRN, "clones", "--repo", repo])


def test_a_cloud_round_reports_sent_bytes_that_add_up(work: Path) -> None:
    a = image(work / "A.img", 4 * MiB, 3)
    data = bytearray(a.read_bytes())
    data[MiB : MiB + 65536] = bytes([7]) * 65536
    b = work / "B.img"
    b.write_bytes(bytes(data))
    pair = ImagePair(a, b, work / "none.json", 4 * MiB, 65536, "none")
    (work / "round").mkdir()
    run = one_repeat(pair, work / "round", 2)
    assert run["first_sent"] == run["a_stored"] > 0
    assert 0 < run["second_sent"] <= run["b_stored"] * 1.05 + 4096
    assert run["repo_files"] > 0 and run["rclone_s"] > 0 and run["restore_cloud_s"] > 0
    assert run["repo_apparent"] >= run["first_sent"]
    assert run["ceiling_sent"] == 32 * MiB and run["ceiling_s"] > 0
    medians = summarize([run])
    assert "bytes sent" in cloud_table(medians, "4M")
    assert medians["first_vs_ceiling"] > 0 and medians["rclone_vs_ceiling"] > 0
    assert not (work / "round" / "local").exists()
