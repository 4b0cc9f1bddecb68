"""A point being exported or booted is pinned: deleting it is refused naming the use, or
waits for it with ``--wait``; a pin dies with its process.

The exporter is a real ``cairn export`` process serving the point over NBD.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cairn.errors import Locked
from cairn.store.delete import delete_points
from cairn.store.pins import pin_point
from cairn.store.repository import Repository
from tests.cli.test_cli import cairn, ok, one_line_error
from tests.store.helpers import make_image

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    make_image(tmp_path / "img", 512 * 1024, seed=2)
    point = json.loads(ok("backup", "--repo", repo, "--volume", "v", tmp_path / "img",
                          "--json"))["point"]
    return repo, point


def _export(repo: Path, point: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "export", "--repo", str(repo),
                             point, "--nbd", "127.0.0.1:0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("exporting point"), (line, proc.stderr.read() if proc.stderr else "")
    return proc


def test_deleting_an_exported_point_is_refused_or_waits(exported: tuple[Path, str]) -> None:
    repo, point = exported
    export = _export(repo, point)
    try:
        one_line_error(cairn("delete", "--repo", repo, point, "--now"), 1,
                       f"point {point} is locked by cairn export on 127.0.0.1:0",
                       f"pid {export.pid}", "--wait SECONDS")
        waiting = subprocess.Popen([sys.executable, "-m", "cairn", "delete", "--repo",
                                    str(repo), point, "--now", "--wait", "60"], cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        assert waiting.stderr is not None
        assert "cairn export on 127.0.0.1:0" in waiting.stderr.readline()
        assert waiting.poll() is None and time.monotonic() < deadline
        export.send_signal(signal.SIGINT)
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0 and "deleted 1 point" in out, err
    finally:
        export.kill()
        export.wait()
    assert json.loads(ok("points", "--repo", repo, "--json")) == []


def test_a_pin_dies_with_its_process(exported: tuple[Path, str]) -> None:
    repo, point = exported
    export = _export(repo, point)
    export.send_signal(signal.SIGKILL)
    export.wait()
    assert "deleted 1 point" in ok("delete", "--repo", repo, point, "--now")


def test_pins_in_one_process_name_their_use(exported: tuple[Path, str]) -> None:
    path, point_id = exported
    repo = Repository.open(path)
    try:
        point = repo.resolve(point_id)
        with pin_point(repo, point, "a boot of clone c1"), \
                pytest.raises(Locked, match="a boot of clone c1: pid"):
            delete_points(repo, [point])
        assert delete_points(repo, [point]) > 0
    finally:
        repo.close()
