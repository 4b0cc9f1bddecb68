"""Freeze/thaw hooks: a failing or hanging hook fails the job with its output; thaw always runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.errors import HookFailed
from cairn.sources.hooks import frozen
from tests.appliance.harness import Agent, Appliance


def test_failing_freeze_still_thaws(tmp_path: Path) -> None:
    thawed = tmp_path / "thawed"
    with pytest.raises(HookFailed) as err, frozen("sda", "echo cannot freeze db; exit 3",
                                                  f"touch {thawed}", 5):
        raise AssertionError("the body must not run when the freeze failed")
    assert "exit status 3" in str(err.value) and "cannot freeze db" in str(err.value)
    assert thawed.exists()


def test_hanging_freeze_is_killed_and_thawed(tmp_path: Path) -> None:
    thawed = tmp_path / "thawed"
    started = time.monotonic()
    # The timeout bounds the thaw too, so it leaves a loaded machine time to start `touch`
    # (0.5 s did not, under a CI load of 10); the freeze's 30 s sleep still shows the kill.
    with pytest.raises(HookFailed) as err, frozen("sda", "echo waiting; sleep 30",
                                                  f"touch {thawed}", 3):
        pass
    assert time.monotonic() - started < 20
    assert "hung" in str(err.value) and "waiting" in str(err.value)
    assert "post-thaw" not in str(err.value)
    assert thawed.exists()


def test_thaw_runs_when_the_read_fails(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with pytest.raises(OSError), frozen("sda", f"echo freeze >> {log}",
                                        f"echo thaw >> {log}", 5):
        raise OSError("disk went away")
    assert log.read_text().split() == ["freeze", "thaw"]


def test_failing_thaw_fails(tmp_path: Path) -> None:
    with pytest.raises(HookFailed) as err, frozen("sda", "true", "echo oops; false", 5):
        pass
    assert "post-thaw" in str(err.value) and "oops" in str(err.value)


def test_failing_hook_fails_the_job_with_its_output(appliance: Appliance,
                                                    make_agent: Callable[..., Agent],
                                                    tmp_path: Path) -> None:
    agent = make_agent("db01")
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\x01" * 262144)
    log = tmp_path / "hooks.log"
    agent.protect("sda", disk, "--pre-freeze", f"echo freeze >> {log}; echo FLUSH TABLES "
                  "failed >&2; exit 7", "--post-thaw", f"echo thaw >> {log}",
                  "--hook-timeout", "5")
    summary = agent.backup()
    assert not summary["ok"]
    job = appliance.jobs("db01")[0]
    assert job["state"] == "failed"
    assert "FLUSH TABLES failed" in job["error"] and "exit status 7" in job["error"]
    assert log.read_text().split() == ["freeze", "thaw"]
