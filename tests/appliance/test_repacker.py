"""The appliance repacks by itself (`appliance.repacker`), and steps aside for a repack by hand."""

from __future__ import annotations

import time
from pathlib import Path

from cairn.appliance.config import ApplianceConfig
from cairn.appliance.repacker import Repacker
from cairn.store.locks import FileLock
from cairn.store.repack import repack
from cairn.store.repository import Repository
from tests.store.test_repack import _check, _history


def test_the_repack_loop_gathers_the_newest_point_by_itself(tmp_path: Path) -> None:
    points = _history(tmp_path)
    repo_path = tmp_path / "repo"
    loop = Repacker(repo_path, ApplianceConfig(repack_seconds=0.05))
    with FileLock(repo_path / "locks" / "repack.lock", "repack").acquire():
        assert loop.run() is None  # `cairn repack` by hand is running: left to it
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            with Repository.open(repo_path) as repo:
                [plan] = repack(repo, dry_run=True).points
            if plan.reads_before <= 3:  # gathered (it was read in about 30 reads)
                break
            assert time.monotonic() < deadline, plan
            time.sleep(0.05)
    finally:
        loop.stop()
    _check(repo_path, points, tmp_path / "out.img")
