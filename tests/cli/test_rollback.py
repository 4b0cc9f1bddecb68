"""`cairn rollback`: only differing blocks are written, onto files and real block devices.

Block-device writes are counted by the kernel (``/sys/block/loopN/stat``, sectors written),
not by cairn, so the "writes only what differs" claim is checked from outside.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cli.test_cli import cairn, ok, one_line_error
from tests.store.helpers import BLOCK, make_image, mutate

SIZE = 8 * 1024 * 1024


def differing_blocks(a: bytes | bytearray, b: bytes | bytearray) -> int:
    return sum(a[o:o + BLOCK] != b[o:o + BLOCK] for o in range(0, len(a), BLOCK))


@contextmanager
def loop_device(image: Path) -> Iterator[Path]:
    device = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                            capture_output=True, text=True).stdout.strip()
    try:
        yield Path(device)
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def sectors_written(device: Path) -> int:
    return int((Path("/sys/block") / device.name / "stat").read_text().split()[6])


def sectors_read(device: Path) -> int:
    return int((Path("/sys/block") / device.name / "stat").read_text().split()[2])


def rollback(repo: Path, point: str, target: Path, *more: str | Path) -> dict[str, int]:
    result: dict[str, int] = json.loads(ok("rollback", "--repo", repo, point, "--to", target,
                                           *more, "--json"))
    return result


def touched_blocks(ranges: list[list[int]]) -> int:
    return len({b for off, length in ranges for b in range(off // BLOCK,
                                                            (off + length - 1) // BLOCK + 1)})


def test_rollback_of_an_image_writes_only_differing_blocks(tmp_path: Path) -> None:
    repo, image = tmp_path / "repo", tmp_path / "disk.img"
    ok("init", "--repo", repo)
    original = make_image(image, SIZE, seed=1)
    point = json.loads(ok("backup", "--repo", repo, "--volume", "d", image, "--json"))["point"]
    damaged = bytearray(original)
    mutate(image, damaged, seed=2, writes=6)
    damaged[3 * BLOCK:4 * BLOCK] = b"\xff" * BLOCK  # a hole of the point now holds data
    image.write_bytes(damaged)
    expected = differing_blocks(original, damaged)

    result = rollback(repo, point, image)
    assert result["blocks_differing"] == expected
    assert result["bytes_written"] == expected * BLOCK
    assert image.read_bytes() == original
    assert rollback(repo, point, image)["bytes_written"] == 0


def test_rollback_of_a_block_device_is_counted_by_the_kernel(tmp_path: Path) -> None:
    repo, image = tmp_path / "repo", tmp_path / "disk.img"
    ok("init", "--repo", repo)
    original = make_image(image, SIZE, seed=3)
    point = json.loads(ok("backup", "--repo", repo, "--volume", "d", image, "--json"))["point"]
    damaged = bytearray(original)
    mutate(image, damaged, seed=4, writes=8)
    differing = differing_blocks(original, damaged) * BLOCK
    with loop_device(image) as device:
        before = sectors_written(device)
        result = rollback(repo, point, device)
        written = (sectors_written(device) - before) * 512
    assert result["bytes_written"] == differing
    assert 0 < written <= 1.1 * differing, (written, differing)
    assert image.read_bytes() == original


def test_rollback_with_a_trackers_ranges_reads_only_those(tmp_path: Path) -> None:
    repo, image, ranges = tmp_path / "repo", tmp_path / "disk.img", tmp_path / "ranges.json"
    ok("init", "--repo", repo)
    original = make_image(image, SIZE, seed=5)
    point = json.loads(ok("backup", "--repo", repo, "--volume", "d", image, "--json"))["point"]
    damaged = bytearray(original)
    tracked = mutate(image, damaged, seed=6, writes=5)
    differing = differing_blocks(original, damaged) * BLOCK
    ranges.write_text(json.dumps(tracked))
    with loop_device(image) as device:
        read_before, written_before = sectors_read(device), sectors_written(device)
        result = rollback(repo, point, device, "--changed-ranges", ranges)
        read = (sectors_read(device) - read_before) * 512
        written = (sectors_written(device) - written_before) * 512
    assert result["bytes_read"] == touched_blocks(tracked) * BLOCK
    assert result["bytes_written"] == differing
    assert 0 < written <= 1.1 * differing, (written, differing)
    assert read < SIZE // 4, read  # the kernel saw the ranges read, not the disk
    assert image.read_bytes() == original


def test_a_change_the_tracker_missed_stays_and_a_bad_range_file_writes_nothing(
        tmp_path: Path) -> None:
    repo, image, ranges = tmp_path / "repo", tmp_path / "disk.img", tmp_path / "ranges.json"
    ok("init", "--repo", repo)
    original = make_image(image, SIZE, seed=7)
    point = json.loads(ok("backup", "--repo", repo, "--volume", "d", image, "--json"))["point"]
    damaged = bytearray(original)
    tracked = mutate(image, damaged, seed=8, writes=2)
    missed = 6 * BLOCK  # written behind the tracker's back
    damaged[missed:missed + 4] = b"MISS"
    image.write_bytes(damaged)
    ranges.write_text(json.dumps([*tracked, [SIZE - 1, 2]]))
    one_line_error(cairn("rollback", "--repo", repo, point, "--to", image, "--changed-ranges",
                         ranges), 2, f"outside the target {image}")
    assert image.read_bytes() == damaged

    ranges.write_text(json.dumps([r for r in tracked if not r[0] <= missed < sum(r)]))
    rollback(repo, point, image, "--changed-ranges", ranges)
    after = image.read_bytes()
    assert after[missed:missed + 4] == b"MISS"  # documented: the tracker is trusted
    assert differing_blocks(after, original) == 1
    assert rollback(repo, point, image)["bytes_written"] == BLOCK  # a full compare finds it
    assert image.read_bytes() == original


def test_rollback_refuses_mounted_small_and_loop_attached_targets(tmp_path: Path) -> None:
    repo, image = tmp_path / "repo", tmp_path / "fs.img"
    ok("init", "--repo", repo)
    with image.open("wb") as f:
        f.truncate(SIZE)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    point = json.loads(ok("backup", "--repo", repo, "--volume", "d", image, "--json"))["point"]
    small = tmp_path / "small.img"
    small.write_bytes(bytes(SIZE // 2))
    one_line_error(cairn("rollback", "--repo", repo, point, "--to", small), 1, "at least")
    assert small.read_bytes() == bytes(SIZE // 2)
    one_line_error(cairn("rollback", "--repo", repo, point, "--to", tmp_path / "nope"), 1,
                   "does not exist")

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    before = image.read_bytes()
    with loop_device(image) as device:
        one_line_error(cairn("rollback", "--repo", repo, point, "--to", image), 1,
                       "attached to", device.name)
        assert image.read_bytes() == before
        subprocess.run(["mount", str(device), str(mnt)], check=True)
        try:
            one_line_error(cairn("rollback", "--repo", repo, point, "--to", device), 1,
                           "mounted or in use")
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
