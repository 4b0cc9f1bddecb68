"""Checks that the benchmark measures what it claims: right ranges, real round trips.

Run: `.venv/bin/pytest bench/test_bench.py` (as root, after `make setup`, which installs
restic and borg; they and the cairn CLI are run for real on a few MiB, so a broken driver
fails here rather than an hour into a full run).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from churn import Churn
from images import BLOCK, changed_ranges, parse_size, size_label
from store_bench import medians
from tools import CAIRN, Borg, Cairn, Restic, Tool, same_bytes


@pytest.fixture
def work() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cairn-bench-test-") as tmp:
        yield Path(tmp)


def image(path: Path, size: int, seed: int) -> Path:
    """A small image of random pages with zero holes between them."""
    data = bytearray(size)
    for n, offset in enumerate(range(0, size, 3 * BLOCK)):
        data[offset : offset + BLOCK] = bytes([(seed + n) % 251 + 1]) * BLOCK
    path.write_bytes(bytes(data))
    return path


def test_sizes_read_as_people_type_them() -> None:
    assert parse_size("2G") == 2**31
    assert parse_size("512M") == 512 * 2**20
    assert parse_size("512MiB") == 512 * 2**20
    assert size_label(2**31) == "2G"
    assert size_label(768 * 2**20) == "768M"


def test_changed_ranges_merge_adjacent_blocks_and_catch_the_tail(work: Path) -> None:
    a = image(work / "a", 40 * BLOCK + 100, 1)
    data = bytearray(a.read_bytes())
    data[5 * BLOCK + 7] ^= 1
    data[6 * BLOCK] ^= 1
    data[20 * BLOCK + 3] ^= 1
    data[-1] ^= 1
    b = work / "b"
    b.write_bytes(bytes(data))
    assert changed_ranges(a, b) == [[5 * BLOCK, 2 * BLOCK], [20 * BLOCK, BLOCK],
                                    [40 * BLOCK, 100]]
    assert changed_ranges(a, a) == []


def test_churn_reports_exactly_what_it_wrote(work: Path) -> None:
    path = image(work / "img", 64 * BLOCK, 2)
    before = path.read_bytes()
    ranges = Churn(path, writes=20, seed=5).step(work / "ranges.json")
    after = path.read_bytes()
    assert json.loads((work / "ranges.json").read_text()) == ranges
    touched = bytearray(len(before))
    for offset, length in ranges:
        touched[offset : offset + length] = b"\1" * length
    assert all(x == y for x, y, t in zip(before, after, touched, strict=True) if not t)
    assert before != after


def test_medians_take_the_middle_round_and_keep_every_round() -> None:
    merged = medians([{"full_s": 3.0, "ok": True}, {"full_s": 1.0, "ok": True},
                      {"full_s": 2.0, "ok": False}])
    assert merged["full_s"] == 2.0
    assert merged["ok"] is False
    assert len(merged["rounds"]) == 3


BOOKKEEPING = 64 * 1024
"""what a delete may add while freeing next to nothing of these compressible few KiB (cairn's
first delete in a repository adds the catalog's machine point tables, 36 KiB)"""
DRIVERS: dict[str, tuple[type[Tool], str]] = {
    "restic": (Restic, "restic"), "borg": (Borg, "borg"), "cairn": (Cairn, str(CAIRN))}


@pytest.mark.parametrize("name", list(DRIVERS))
def test_driver_round_trip_restores_the_oldest_point_exactly(work: Path, name: str) -> None:
    driver, command = DRIVERS[name]
    if shutil.which(command) is None:  # one line with the fix, not a traceback from Popen
        pytest.fail(f"{command} is not installed: run `make setup` (it installs restic and "
                    "borgbackup from Debian, and cairn into .venv)", pytrace=False)
    tool = driver(work)
    a = image(work / "a.img", 64 * BLOCK, 3)
    b = work / "b.img"
    b.write_bytes(a.read_bytes())
    ranges = Churn(b, writes=8, seed=9).step(work / "ranges.json")
    assert ranges
    tool.init()
    oldest = tool.backup(a)
    tool.backup(b, work / "ranges.json")
    stored = tool.stored_bytes()
    dest = work / "restored.img"
    tool.restore(oldest, dest)
    assert same_bytes(dest, a)
    tool.delete(oldest)
    assert tool.stored_bytes() <= stored + BOOKKEEPING


def test_scale_bench_counts_every_request_the_server_answered() -> None:
    from cloud_scale_bench import delta

    from tests.s3server import SeaweedS3

    with SeaweedS3.start(metrics=True) as server:
        s3 = server.client()
        before = server.requests()
        s3.put_object(Bucket=server.bucket, Key="a", Body=b"x")
        s3.list_objects_v2(Bucket=server.bucket)
        s3.get_object(Bucket=server.bucket, Key="a")
        assert delta(server.requests(), before) == {"GET": 1, "LIST": 1, "PUT": 1}


def test_scale_bench_thirds_are_medians_of_each_third_by_x() -> None:
    from cloud_scale_bench import thirds

    pairs = [(5.0, 50.0), (1.0, 10.0), (3.0, 30.0), (2.0, 20.0), (4.0, 40.0), (6.0, 60.0)]
    assert thirds(pairs) == [(1.5, 15.0), (3.5, 35.0), (5.5, 55.0)]
