"""Two backups that meet the same new chunks, the second killed at every step of its commit.

Backups of two volumes from one image both pin the same chunks, find none of them stored,
and both write them. The first commits; the second is then SIGKILLed just before each
storage step of its commit in turn (every fsync, hole punch, unlink and SQLite COMMIT, see
`crash_worker`). After every kill the first point must restore bit for bit, a later backup
of the second volume must work, and ``verify --read-data`` must be clean: no writer may
punch a copy a committed point reads before its own commit is durable.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cairn.store.repository import Repository
from cairn.store.verify import verify
from tests.store.helpers import backup, digest, make_image, restored_digest

ROOT = Path(__file__).resolve().parents[2]


def _start(repo: Path, volume: str, image: Path, gate: Path, kill_at: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_worker", str(repo), volume, str(image),
         str(gate), str(kill_at)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def _wait_ready(gate: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not gate.with_suffix(".ready").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the backup never reached its commit"
        time.sleep(0.02)


def _race(work: Path, image: Path, kill_at: int) -> tuple[str, int | None]:
    """First backup committed, second killed at step ``kill_at``; returns the first point's
    id and the second's step count when it was not killed."""
    repo = work / "repo"
    Repository.init(repo).close()
    first = _start(repo, "alpha", image, work / "a", 0)
    second = _start(repo, "beta", image, work / "b", kill_at)
    try:
        _wait_ready(work / "a", first)
        _wait_ready(work / "b", second)
        (work / "a.go").touch()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        (work / "b.go").touch()
        out2, err2 = second.communicate(timeout=120)
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if second.returncode == 0:
        return out.split()[0], int(out2.split()[1])
    assert second.returncode == -9, err2
    return out.split()[0], None


def test_a_killed_writer_of_shared_chunks_never_harms_a_committed_point(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    want = digest(make_image(image, 1024 * 1024, seed=7, fill=0.9))
    for kill_at in range(1, 40):
        work = tmp_path / f"k{kill_at}"
        work.mkdir()
        first_id, finished_steps = _race(work, image, kill_at)
        repo = Repository.open(work / "repo")
        try:
            first = repo.resolve(first_id)
            assert restored_digest(repo, first, work / "out") == want, f"killed at {kill_at}"
            again = backup(repo, "beta", image)
            assert restored_digest(repo, again, work / "out") == want, f"killed at {kill_at}"
            report = verify(repo, read_data=True)
            assert report.ok, (kill_at, report.problems[:3])
        finally:
            repo.close()
        if finished_steps is not None:
            assert finished_steps >= 4, "the second backup took no storage step"
            return
    raise AssertionError("the second backup never finished")
