"""Pull the power cord (ZFS ztest style): SIGKILL random operations at random moments.

After each kill the repository is reopened as the next writer would open it, and must hold:
every committed point restores bit for bit to the exact file it was taken from, ``verify
--read-data`` (catalog integrity, run accounting, every chunk's hash) is clean, and the chunk
files on disk are exactly the catalog's chunks: nothing lost, nothing leaked. The seed is in
the test id and the failure message; ``CAIRN_TORTURE_ROUNDS`` runs longer.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cairn.store.chunks import chunk_name
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from cairn.store.verify import verify
from tests.s3server import SeaweedS3
from tests.store.helpers import restored_digest

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = int(os.environ.get("CAIRN_TORTURE_ROUNDS", "12"))
TORTURE_SECONDS = os.environ.get("CAIRN_TORTURE_SECONDS", "180")  # the issue asks CI for 3 min


def check_repository(repo_path: Path, scratch: Path, seed: int) -> int:
    repo = Repository.open(repo_path)
    try:
        report = verify(repo, read_data=True)
        assert report.ok, f"seed {seed}: verify after kill: {report.problems[:5]}"
        for volume in repo.catalog.volumes():
            with repo.volume_lock(volume):
                repo.recover(volume)
        repo.reclaim()
        on_disk = set(repo.chunks.backend.list("chunks"))
        in_catalog = {chunk_name(h) for h in repo.catalog.chunk_refs()}
        assert on_disk == in_catalog, (
            f"seed {seed}: {len(on_disk - in_catalog)} leaked, "
            f"{len(in_catalog - on_disk)} missing chunk files")
        packs = {p.name for p in (repo_path / "packs").glob("*.pack")}
        with sqlite3.connect(repo_path / "packs.db") as index:
            indexed = {r[0] for r in index.execute("SELECT name FROM packs")}
        assert packs <= indexed, f"seed {seed}: packs left by a dead writer: {packs - indexed}"
        points = repo.catalog.points()
        for point in points:
            want = hashlib.sha256(Path(point.source).read_bytes()).hexdigest()
            got = restored_digest(repo, point, scratch / "restore.img")
            assert got == want, f"seed {seed}: point {point.id} does not restore"
            assert PointReader(repo, point).size == Path(point.source).stat().st_size
        report = verify(repo, read_data=True)
        assert report.ok, f"seed {seed}: verify after recovery: {report.problems[:5]}"
        return len(points)
    finally:
        repo.close()


@pytest.mark.parametrize("seed", [20261125 + k for k in range(ROUNDS // 4 or 1)])
def test_kill_at_random_moments(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    repo_path = tmp_path / "repo"
    Repository.init(repo_path).close()
    work = tmp_path / "states"
    work.mkdir()
    most_points = 0
    for round_ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.store.torture_worker", str(repo_path), str(work),
             str(seed * 10 + round_)], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            # The first round is killed only after a commit, so the test is never vacuous.
            for said in ("ready", "committed") if round_ == 0 else ("ready",):
                assert child.stdout is not None and child.stdout.readline().strip() == said, \
                    child.stderr.read() if child.stderr else ""
            time.sleep(rnd.uniform(0.3, 2.0))
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            os.kill(child.pid, signal.SIGKILL)
        finally:
            child.kill()
            child.wait()
        most_points = max(most_points, check_repository(repo_path, tmp_path, seed))
    assert most_points > 0, f"seed {seed}: the worker never committed a point"


def test_debug_torture_over_every_writer(tmp_path: Path, s3_server: SeaweedS3) -> None:
    """`cairn debug torture` as a user runs it, with a cloud repository: backups, deletes,
    prunes, clones, replications, cloud unpublishes and pack prunes SIGKILLed at random,
    each pass checked. The grace period is short, so the prunes really delete packs while
    every published point stays whole in the bucket; some kills are aimed inside a prune,
    others inside a batch write (another node's sync writes one after each replication),
    and a node that learns points only from the feed and its batches holds exactly the
    bucket's. Seed 5 found the prefetch that dropped SQLite's locks (see `store.sqlite`)."""
    env = {**os.environ, "CAIRN_S3_ENDPOINT": s3_server.endpoint,
           "CAIRN_S3_ACCESS_KEY": s3_server.access_key,
           "CAIRN_S3_SECRET_KEY": s3_server.secret_key, "CAIRN_CACHE": str(tmp_path / "cache"),
           "CAIRN_KEYS": str(tmp_path / "keys")}
    url = f"s3://{s3_server.bucket}/torture-{uuid.uuid4().hex[:10]}"
    result = subprocess.run(
        [sys.executable, "-m", "cairn", "debug", "torture", "--seconds", TORTURE_SECONDS,
         "--seed", "5", "--work", str(tmp_path / "work"), "--cloud", url, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout)
    assert outcome["kills"] >= 5 and outcome["clean_passes"] >= 1, outcome
    assert outcome["points_checked"] > 0 and outcome["cloud_points_checked"] > 0, outcome
    assert outcome["prune_passes"] >= 2 and outcome["packs_freed"] > 0, outcome
    assert outcome["prunes_killed_midway"] >= 1, outcome
    assert outcome["batches_written"] >= 1 and outcome["reader_points_checked"] > 0, outcome
