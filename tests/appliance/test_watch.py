"""The alert loop's conditions on real state, with the clock passed in (no waiting)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.alerts import AlertStore
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.offsite import OffsiteSettings, OffsiteTable
from cairn.appliance.state import State
from cairn.appliance.watch import Checks, reconcile
from cairn.appliance.window import in_window, parse_window, window_end, window_start
from cairn.errors import UsageError
from cairn.store.repository import Repository
from tests.store.helpers import backup, make_image


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Path, State, AlertStore]]:
    repo = tmp_path / "repo"
    Repository.init(repo).close()
    state = State(repo / "appliance.db")
    store = AlertStore(repo / "appliance.db")
    try:
        yield repo, state, store
    finally:
        store.close()
        state.close()


def _kinds(checks: Checks, now: float) -> set[tuple[str, str]]:
    return {(c.kind, c.machine) for c in checks.all(now)}


def test_silent_agent_and_missing_points_open_then_clear(
        world: tuple[Path, State, AlertStore], tmp_path: Path) -> None:
    repo, state, _ = world
    checks = Checks(repo, state, ApplianceConfig(agent_silent_seconds=10_000))
    state.add_machine("idle")  # never paired: no agent to miss, no schedule
    token = state.add_machine("web01")
    machine, _ = state.pair(token) or (None, None)
    assert machine is not None
    state.set_schedule(machine.id, 3600.0, None, None, next_run=0)
    t0 = state.machine("web01").last_seen or 0.0
    assert _kinds(checks, t0 + 7000) == set()
    assert _kinds(checks, t0 + 7300) == {("no_recent_point", "web01")}
    assert _kinds(checks, t0 + 10_001) == {("no_recent_point", "web01"),
                                           ("agent_silent", "web01")}
    state.register_volume(machine.id, "sda", 1 << 20)
    make_image(tmp_path / "sda.img", 1 << 20, seed=1)
    r = Repository.open(repo)
    try:
        point = backup(r, "web01.sda", tmp_path / "sda.img")
    finally:
        r.close()
    assert _kinds(checks, point.created + 7000) == set()
    [found] = checks.all(point.created + 7300)
    assert "every 60 min" in found.message and "newest point is 2.0 h old" in found.message


def test_failed_job_opens_one_alert_and_the_next_good_job_resolves_it(
        world: tuple[Path, State, AlertStore]) -> None:
    repo, state, store = world
    checks = Checks(repo, state, ApplianceConfig())
    state.add_machine("db01")
    db01 = state.machine("db01")
    assert db01 is not None
    store.set_settings({"webhook": "http://127.0.0.1:9/hook"})
    for error in ("disk vanished", "disk vanished again"):
        job, _ = state.queue_job(db01.id, "manual")
        state.take_job(db01.id)
        state.finish_job(job, False, error, 0, 0, [])
        reconcile(store, checks.all(0))
    [alert] = store.alerts()
    assert alert.kind == "job_failed" and "disk vanished again" in alert.message
    assert [d.event for d in store.deliveries(alert.id)] == ["open"]
    state.record_missed(db01.id, "schedule", "machine offline")
    reconcile(store, checks.all(0))
    assert store.alerts() != []  # a missed slot is not a good backup
    job, _ = state.queue_job(db01.id, "manual")
    state.take_job(db01.id)
    state.finish_job(job, True, None, 0, 0, [])
    reconcile(store, checks.all(0))
    assert store.alerts() == []
    assert sorted(d.event for d in store.deliveries(alert.id)) == ["open", "resolved"]


def test_repository_file_system_under_ten_percent_free(tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        Repository.init(mnt / "repo").close()
        state = State(mnt / "repo" / "appliance.db")
        try:
            checks = Checks(mnt / "repo", state, ApplianceConfig())
            assert checks.disk(0) == []
            filler = mnt / "filler"
            filler.write_bytes(b"\1" * (7 * 1024 * 1024 + 600 * 1024))
            [low] = checks.disk(0)
            assert low.kind == "disk_low" and "% free (under 10%)" in low.message
            filler.unlink()
            assert checks.disk(0) == []
        finally:
            state.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_offsite_behind_by_more_than_two_intervals(
        world: tuple[Path, State, AlertStore]) -> None:
    repo, state, _ = world
    checks = Checks(repo, state, ApplianceConfig())
    table = OffsiteTable(state)
    state.add_machine("web01")
    web01 = state.machine("web01")
    assert web01 is not None
    table.set(web01.id, OffsiteSettings("s3://b/p", None, 3600.0, "daily", None, None,
                                        "22:00-06:00", None))
    [policy] = table.policies()
    assert checks.offsite_behind(policy.created + 7000) == []
    [behind] = checks.offsite_behind(policy.created + 7300)
    assert behind.kind == "offsite_behind" and "never replicated" in behind.message
    table.finished(policy, policy.created + 7200, "bucket unreachable", None)
    [behind] = checks.offsite_behind(policy.created + 7300)
    assert "the last run failed: bucket unreachable" in behind.message
    table.finished(policy, policy.created + 7250, None, {"points_sent": 1})
    assert checks.offsite_behind(policy.created + 7300) == []


def test_windows_wrap_midnight_and_bad_ones_are_refused() -> None:
    def at(hour: int, minute: int = 0) -> float:
        return time.mktime((2026, 3, 2, hour, minute, 0, 0, 0, -1))

    assert parse_window("22:00-06:00") == (1320, 360)
    assert in_window("22:00-06:00", at(23)) and in_window("22:00-06:00", at(5, 59))
    assert not in_window("22:00-06:00", at(6)) and not in_window("22:00-06:00", at(12))
    assert in_window("01:30-02:00", at(1, 45)) and not in_window("01:30-02:00", at(2))
    assert in_window(None, at(12))
    assert window_end("22:00-06:00", at(23)) == at(6) + 86400  # closes tomorrow morning
    assert window_end("22:00-06:00", at(2)) == at(6)
    assert window_end("01:30-02:00", at(1, 45)) == at(2) and window_end(None, at(1)) is None
    assert window_start("22:00-06:00", at(23)) == at(22)
    assert window_start("22:00-06:00", at(2)) == at(22) - 86400  # opened last evening
    assert window_start("01:30-02:00", at(1, 45)) == at(1, 30)
    for bad in ("22:00", "24:00-06:00", "22:60-06:00", "06:00-06:00", "late"):
        with pytest.raises(UsageError, match="HH:MM-HH:MM"):
            parse_window(bad)
