"""FIEMAP change tracking on real btrfs and XFS file systems in loop-mounted image files.

After a first backup the agent keeps a reflink snapshot; the next backup clones the image
again and reads only the ranges whose extents moved. Asserted: it chose that mode, it read
less than twice what was written, and the point restores byte for byte.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn.agent.upload import aligned, pieces
from cairn.frames import MIN_FRAME
from tests.appliance.harness import Agent, Appliance, restore

MKFS = {"btrfs": ["mkfs.btrfs", "-q", "-f"], "xfs": ["mkfs.xfs", "-q", "-f", "-m", "reflink=1"]}
MiB = 1 << 20


@pytest.fixture(params=["btrfs", "xfs"])
def reflink_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    fs = request.param
    if shutil.which(MKFS[fs][0]) is None or os.geteuid() != 0:
        pytest.skip(f"needs root and {MKFS[fs][0]}")
    image, mount = tmp_path / f"{fs}.img", tmp_path / f"{fs}-mnt"
    with open(image, "wb") as f:
        f.truncate(320 * MiB)
    subprocess.run([*MKFS[fs], str(image)], check=True, capture_output=True)
    mount.mkdir()
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], check=True,
                          capture_output=True, text=True).stdout.strip()
    try:
        subprocess.run(["mount", loop, str(mount)], check=True, capture_output=True)
        try:
            yield mount
        finally:
            subprocess.run(["umount", str(mount)], check=False, capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", loop], check=False, capture_output=True)


def test_fiemap_reads_only_changed_extents(appliance: Appliance,
                                           make_agent: Callable[..., Agent],
                                           reflink_dir: Path, tmp_path: Path) -> None:
    agent = make_agent("vm01")
    disk = reflink_dir / "disk.img"
    rnd = random.Random(7)
    data = bytearray(rnd.randbytes(24 * MiB))
    disk.write_bytes(data)
    agent.protect("sda", disk)
    first = agent.backup()
    assert first["ok"], first

    written = 0
    with open(disk, "r+b") as f:
        for _ in range(10):
            n = rnd.randrange(4096, 200_000)
            off = rnd.randrange(0, len(data) - n)
            data[off : off + n] = rnd.randbytes(n)
            f.seek(off)
            f.write(data[off : off + n])
            written += n
        f.flush()
        os.fsync(f.fileno())
    second = agent.backup()
    volume = second["volumes"][0]
    assert second["ok"] and volume["mode"] == "fiemap", second
    assert 0 < volume["bytes_read"] < 2 * written, (volume, written)
    assert volume["bytes_sent"] < 2 * written + 64 * 1024
    assert restore(appliance, second["points"][0], tmp_path / "r.img") == data
    assert restore(appliance, first["points"][0], tmp_path / "r0.img") != data
    assert not (reflink_dir / "disk.img.cairn-snapshot.new").exists()


def test_changes_widen_to_whole_minimum_frames() -> None:
    """A file system with 1 KiB blocks maps extents the appliance would refuse as frames:
    the agent widens each change to 4 KiB marks (the end to the volume's) and merges."""
    size = 10 * MIN_FRAME + 700
    changes = [(1024, 1024), (3072, 2048), (9 * MIN_FRAME, 100), (10 * MIN_FRAME + 10, 5)]
    assert aligned(changes, size) == [(0, 2 * MIN_FRAME), (9 * MIN_FRAME, MIN_FRAME + 700)]
    for offset, length in pieces(aligned(changes, size)):
        assert length >= MIN_FRAME or offset + length == size
