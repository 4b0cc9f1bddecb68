"""Data verification by schedule: a rotating 1/N of the chunks each night reads every chunk
once in N nights; damage names the points it hurts and raises an alert on their machine.
The clock is passed in (local times of made-up nights), never waited for."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.alerts import AlertStore
from cairn.appliance.config import load
from cairn.appliance.data_check import DataCheck
from cairn.appliance.offsite import OffsiteTable
from cairn.appliance.state import State
from cairn.appliance.verification import VerificationTable
from cairn.errors import UsageError
from cairn.store.repository import Repository
from cairn.store.verify import in_slice, verify
from tests.store.helpers import backup, flip_bit, make_image, mutate


@pytest.fixture
def state(tmp_path: Path) -> Iterator[State]:
    """The appliance state of a new repository at ``tmp_path/repo`` that knows web01."""
    Repository.init(tmp_path / "repo").close()
    state = State(tmp_path / "repo" / "appliance.db")
    try:
        state.add_machine("web01")
        yield state
    finally:
        state.close()


def at(day: int, hour: int, minute: int = 0) -> float:
    """Local time on day ``day`` of March 2026 (mktime rolls a day past the month over)."""
    return time.mktime((2026, 3, day, hour, minute, 0, 0, 0, -1))


def test_every_chunk_is_read_once_in_n_days_and_damage_alerts(tmp_path: Path, state: State) -> None:
    repo_path = tmp_path / "repo"
    web01 = state.machine("web01")
    assert web01 is not None
    state.register_volume(web01.id, "sda", 4 << 20)
    img = tmp_path / "sda.img"
    data = make_image(img, 4 << 20, seed=3, fill=0.7)
    repo = Repository.open(repo_path)
    try:
        first = backup(repo, "web01.sda", img)
        mutate(img, data, seed=4)
        second = backup(repo, "web01.sda", img)
        everything = verify(repo, read_data=True)
    finally:
        repo.close()
    table = VerificationTable(state)
    table.set(web01.id, "off", None, 3)
    check = DataCheck(repo_path, table, OffsiteTable(state), window="01:00-05:00")

    assert check.run_due(at(1, 12)) == [] and check.run_due(at(1, 0, 59)) == []  # daytime
    reports = [r for day in (2, 3, 4) for _, r in check.run_due(at(day, 1, 30))]
    assert check.run_due(at(4, 4, 59)) == []  # tonight's slice is done
    assert len(reports) == 3 and all(r.ok for r in reports)
    assert sum(r.chunks for r in reports) == everything.chunks
    assert sum(r.bytes_read for r in reports) == everything.bytes_read
    assert all(r.chunks < everything.chunks for r in reports)

    repo = Repository.open(repo_path)
    try:
        victim = next(iter(repo.catalog.chunk_refs()))
        flip_bit(repo, victim)
    finally:
        repo.close()
    k = next(k for k in range(3) if in_slice(victim, (k, 3)))
    found = []
    for day in (5, 6, 7):  # the rotation continues: slice k comes within 3 nights
        found += [r for _, r in check.run_due(at(day, 3)) if r.damaged]
    [damaged] = found
    assert set(damaged.damaged) == {victim.hex()}
    store = AlertStore(repo_path / "appliance.db")
    try:
        [alert] = store.alerts(kind="damage")
    finally:
        store.close()
    assert alert.machine == "web01" and alert.subject.endswith(f"slice {k + 1}/3")
    hurt = damaged.damaged[victim.hex()]
    assert hurt and set(hurt) <= {first.id, second.id}
    assert all(p in alert.message for p in hurt)


def test_a_window_across_midnight_is_one_night(tmp_path: Path, state: State) -> None:
    repo_path = tmp_path / "repo"
    web01 = state.machine("web01")
    assert web01 is not None
    table = VerificationTable(state)
    table.set(web01.id, "off", None, 7)
    check = DataCheck(repo_path, table, OffsiteTable(state), window="23:00-02:00")
    assert [loc for loc, _ in check.run_due(at(1, 23, 30))] == [str(repo_path)]
    assert check.run_due(at(2, 1, 30)) == []  # after midnight: still the same night
    assert check.run_due(at(2, 12)) == []
    assert len(check.run_due(at(3, 0, 15))) == 1  # the next night, opened at 23:00
    assert table.data_progress(str(repo_path))[0] == 2


def test_the_window_is_set_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "appliance.toml"
    config.write_text('[scheduler]\ndata_verify_window = "22:30-04:00"\n')
    assert load(config).data_verify_window == "22:30-04:00"
    config.write_text('[scheduler]\ndata_verify_window = "night"\n')
    with pytest.raises(UsageError, match=r"data_verify_window.*HH:MM-HH:MM"):
        load(config)
