"""Local locks: a dead holder never blocks, a wait names the holder and its time, --wait.

The holder is a real second process taking a volume's lock as a writer would.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cairn.errors import Locked
from cairn.store.repository import Repository
from tests.cli.test_cli import cairn, one_line_error
from tests.store.helpers import backup, make_image

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from pathlib import Path
from cairn.store.repository import Repository
repo = Repository.open(Path(sys.argv[1]))
with repo.volume_lock(repo.volume("vol")):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _hold(repo: Path, seconds: float) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(repo), str(seconds)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    repo = Repository.init(path)
    make_image(tmp_path / "img", 256 * 1024, seed=1)
    backup(repo, "vol", tmp_path / "img")
    repo.close()
    return path


def test_a_held_lock_names_its_holder_and_how_long_and_waits_when_asked(
        repo_path: Path) -> None:
    holder = _hold(repo_path, 60)
    repo = Repository.open(repo_path)
    try:
        with pytest.raises(Locked, match=rf"pid {holder.pid} on .* held for \d+ s"):
            repo.volume_lock(repo.volume("vol"))
        repo.lock_wait = 0.5
        told: list[str] = []
        repo.on_wait = told.append
        started = time.monotonic()
        with pytest.raises(Locked, match=r"waited 0\.5 s"):
            repo.volume_lock(repo.volume("vol"))
        assert time.monotonic() - started >= 0.5
        assert len(told) == 1 and f"pid {holder.pid}" in told[0] and "held for" in told[0]
        holder.send_signal(signal.SIGKILL)  # a dead holder on this host: free at once
        holder.wait()
        repo.lock_wait = 0.0
        with repo.volume_lock(repo.volume("vol")):
            pass
    finally:
        holder.kill()
        holder.wait()
        repo.close()


def test_cli_wait_outlasts_a_short_holder(repo_path: Path) -> None:
    repo = Repository.open(repo_path)
    point = repo.catalog.points()[0].id
    repo.close()
    holder = _hold(repo_path, 10)
    try:
        one_line_error(cairn("delete", "--repo", repo_path, "--now", point), 1,
                       f"pid {holder.pid}", "--wait SECONDS")
        result = cairn("delete", "--repo", repo_path, "--now", point, "--wait", "30")
        assert result.returncode == 0, result.stderr
        assert f"waiting up to 30 s for volume vol, locked by pid {holder.pid}" in result.stderr
        assert "deleted 1 point" in result.stdout
    finally:
        holder.kill()
        holder.wait()
