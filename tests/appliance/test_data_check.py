"""Data verification by schedule: a rotating 1/N of the chunks each day reads every chunk
once in N days; damage names the points it hurts and raises an alert on their machine."""

from __future__ import annotations

from pathlib import Path

from cairn.alerts import AlertStore
from cairn.appliance.data_check import DataCheck
from cairn.appliance.offsite import OffsiteTable
from cairn.appliance.state import State
from cairn.appliance.verification import VerificationTable
from cairn.store.repository import Repository
from cairn.store.verify import in_slice, verify
from tests.store.helpers import backup, flip_bit, make_image, mutate

DAY = 86400.0


def test_every_chunk_is_read_once_in_n_days_and_damage_alerts(tmp_path: Path) -> None:
    repo_path = tmp_path / "repo"
    Repository.init(repo_path).close()
    state = State(repo_path / "appliance.db")
    try:
        state.add_machine("web01")
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
        check = DataCheck(repo_path, table, OffsiteTable(state), every_seconds=DAY)

        reports = [r for day in range(3) for _, r in check.run_due(DAY * (day + 1))]
        assert check.run_due(DAY * 3 + 10) == []  # not a day yet since the last pass
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
        for day in range(4, 7):  # the rotation continues: slice k comes within 3 days
            found += [r for _, r in check.run_due(DAY * day) if r.damaged]
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
    finally:
        state.close()
