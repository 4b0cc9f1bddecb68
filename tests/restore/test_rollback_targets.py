"""`rollback_targets`: what a REST rollback may write, judged on real files and devices.

The REST tests (`tests/appliance/test_rollback_api.py`) cover image files through the API;
here the policy meets devices directly: the device of the repository's own file system
(a device node of our own, so no symlink or name gives it away; only its status is judged,
the root disk is never opened), a mounted loop device and an unmounted one.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from cairn.errors import DestinationError
from cairn.restore.rollback import rollback
from cairn.restore.rollback_targets import TargetPolicy, check_file, check_target
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from tests.cli.test_cli import ok
from tests.cli.test_rollback import loop_device
from tests.store.helpers import make_image

SIZE = 2 * 1024 * 1024


def judge(target: Path, policy: TargetPolicy) -> None:
    fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check_target(target, fd, policy)
    finally:
        os.close(fd)


def test_the_device_under_the_repository_is_refused_an_unmounted_one_allowed(
        tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    policy = TargetPolicy(repo)
    node = tmp_path / "own-disk"
    os.mknod(node, stat.S_IFBLK | 0o600, os.stat(repo).st_dev)
    with pytest.raises(DestinationError, match="repository or root file system"):
        check_file(node, node, os.stat(node), policy)
    image = tmp_path / "spare.img"
    image.write_bytes(bytes(SIZE))
    with loop_device(image) as device:
        judge(device, policy)
        subprocess.run(["mkfs.ext4", "-q", str(device)], check=True)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", str(device), str(mnt)], check=True)
        try:
            with pytest.raises(DestinationError, match="is mounted"):
                judge(device, policy)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


def test_image_files_are_refused_until_image_dirs_names_their_folder(tmp_path: Path) -> None:
    repo, image = tmp_path / "repo", tmp_path / "disk.img"
    ok("init", "--repo", repo)
    original = make_image(image, SIZE, seed=31)
    point = json.loads(ok("backup", "--repo", repo, "--volume", "d", image, "--json"))["point"]
    image.write_bytes(bytes(SIZE))
    with Repository.open(repo, read_only=True) as store:
        reader = PointReader(store, store.resolve(point))
        with pytest.raises(DestinationError, match=r"until \[rollback\] image_dirs"):
            rollback(reader, image, policy=TargetPolicy(repo))
        assert image.read_bytes() == bytes(SIZE)
        rollback(reader, image, policy=TargetPolicy(repo, (tmp_path,)))
    assert image.read_bytes() == original
