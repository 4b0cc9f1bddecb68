"""Temporary folders of SIGKILLed processes do not stay (`cairn.scratch`): real processes
make them, one is killed, and the next of its kind removes only the dead one's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn import scratch

ROOT = Path(__file__).resolve().parent.parent
HOLDER = """\
import sys
from pathlib import Path
from cairn import scratch
with scratch.folder(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else None) as made:
    print(made, flush=True)
    sys.stdin.read()
"""


class Holders:
    """Processes each holding a folder of one kind, all stopped at the end of the test."""

    def __init__(self, tmp: Path) -> None:
        self.env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
        self.children: list[subprocess.Popen[str]] = []

    def start(self, *where: str) -> tuple[subprocess.Popen[str], Path]:
        child = subprocess.Popen([sys.executable, "-c", HOLDER, *where], env=self.env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.children.append(child)
        assert child.stdout is not None
        return child, Path(child.stdout.readline().strip())

    def stop(self) -> None:
        for child in self.children:
            child.kill()
            child.wait()
            for pipe in (child.stdin, child.stdout):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[Holders]:
    made = Holders(tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    try:
        yield made
    finally:
        made.stop()


@pytest.mark.parametrize("under", [False, True], ids=["tmpdir", "repository"])
def test_the_next_folder_of_a_kind_removes_a_killed_ones_and_keeps_a_live_ones(
        holders: Holders, tmp_path: Path, under: bool) -> None:
    where = ["cairn-insights-", str(tmp_path)] if under else ["cairn-insights-"]
    killed, killed_folder = holders.start(*where)
    live, live_folder = holders.start(*where)
    (killed_folder / "image.qcow2").write_bytes(b"x" * 4096)
    assert killed_folder.name.startswith(f"cairn-insights-{killed.pid}-")
    assert killed_folder.parent == (tmp_path if under else tmp_path / "tmp")
    killed.kill()
    killed.wait()
    assert killed_folder.is_dir()  # nothing could tidy up after the SIGKILL
    _, next_folder = holders.start(*where)
    assert not killed_folder.exists()
    assert live_folder.is_dir() and next_folder.is_dir()
    assert live.stdin is not None
    live.stdin.close()  # a process that ends removes its own
    assert live.wait(10) == 0
    assert not live_folder.exists()


def test_a_sweep_removes_only_dead_processes_folders_of_its_own_kind(
        holders: Holders, tmp_path: Path) -> None:
    """The appliance sweeps at its start (`server._tidy`); another kind whose name starts
    the same (``cairn-insights-t-``) is not this kind's."""
    dead, dead_folder = holders.start("cairn-insights-", str(tmp_path))
    other, other_folder = holders.start("cairn-insights-t-", str(tmp_path))
    _, live_folder = holders.start("cairn-insights-", str(tmp_path))
    for child in (dead, other):
        child.kill()
        child.wait()
    scratch.sweep("cairn-insights-", tmp_path)
    assert not dead_folder.exists()
    assert live_folder.is_dir() and other_folder.is_dir()
    scratch.sweep("cairn-insights-t-", tmp_path)
    assert not other_folder.exists()


def test_the_appliance_start_removes_killed_conversions_and_state_copies_from_the_repository(
        holders: Holders, tmp_path: Path) -> None:
    """A download's conversion holds a whole image: it must not wait for the next one."""
    from cairn.appliance.server import _tidy
    from cairn.appliance.state_backup import COPY_PREFIX
    from cairn.web.points import CONVERT_PREFIX

    repo = tmp_path / "repo"
    repo.mkdir()
    _, live = holders.start(CONVERT_PREFIX, str(repo))
    left = []
    for prefix in (CONVERT_PREFIX, COPY_PREFIX):
        child, folder = holders.start(prefix, str(repo))
        child.kill()
        child.wait()
        left.append(folder)
    assert all(folder.is_dir() for folder in left)
    _tidy(repo)
    assert [folder for folder in left if folder.exists()] == []
    assert live.is_dir()
