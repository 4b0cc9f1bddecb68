"""The one retention planner: policy rules, keep rules, and the report of what stayed why."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from cairn.errors import UnknownVolume, UsageError
from cairn.ops import retention
from cairn.ops.clones import clone, remove
from cairn.ops.machine_points import boot_disks, disks_of, list_machine_points, prune_machine
from cairn.store import marks
from cairn.store.catalog import RecoveryPoint
from cairn.store.machine_points import MachinePoints
from cairn.store.repository import Repository
from cairn.store.retention import Policy
from cairn.store.verify import verify
from tests.store.helpers import backup, make_image, mutate


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    with Repository.init(tmp_path / "repo") as repo:
        yield repo


def _points(repo: Repository, tmp_path: Path, count: int, volume: str = "v"
            ) -> list[RecoveryPoint]:
    tmp_path.mkdir(exist_ok=True)
    img = tmp_path / "disk.img"
    data = make_image(img, 512 * 1024, seed=1)
    points = []
    for i in range(count):
        if i:
            mutate(img, data, seed=i)
        points.append(backup(repo, volume, img))
    return points


def test_prune_keeps_what_the_policy_and_the_clones_keep(repo: Repository,
                                                         tmp_path: Path) -> None:
    first, second, third, fourth = _points(repo, tmp_path, 4)
    clone(repo, second.id, "held")
    dry = retention.prune(repo, "v", Policy(last=1), dry_run=True)
    assert dry.deleted == [first.id, third.id]
    assert [p.id for p in repo.catalog.points()] == [first.id, second.id, third.id, fourth.id]

    result = retention.prune(repo, "v", Policy(last=1))
    assert result.json()["kept"] == [{"id": second.id, "rules": ["has a clone"]},
                                     {"id": fourth.id, "rules": ["last"]}]
    assert result.deleted == [first.id, third.id]
    assert [p.id for p in marks.live_points(repo)] == [second.id, fourth.id]

    remove(repo, ["held"])
    assert retention.prune(repo, "v", Policy(last=1)).deleted == [second.id]


def test_pruned_points_are_held_restorable_then_reclaimed(
        repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a policy removes stays whole for the deletion window, as after `cairn delete`:
    a stolen login that sets "last=1" can be undone."""
    first, second, third = _points(repo, tmp_path, 3)
    result = retention.prune(repo, "v", Policy(last=1))
    assert result.deleted == [first.id, second.id] and result.freed_chunks == 0
    assert result.held_until == pytest.approx(time.time() + marks.DEFAULT_WINDOW, abs=60)
    assert result.json()["held_until"] == result.held_until
    assert [p.id for p, _ in marks.held_points(repo)] == [first.id, second.id]
    assert [p.id for p in repo.catalog.points()] == [first.id, second.id, third.id]
    assert retention.prune(repo, "v", Policy(last=1)).deleted == []  # held: out of the plan

    marks.undelete(repo, first)
    assert [p.id for p in marks.live_points(repo)] == [first.id, third.id]
    monkeypatch.setenv("CAIRN_DELETE_WINDOW", "0s")
    again = retention.prune(repo, "v", Policy(last=1))
    assert again.deleted == [first.id] and again.freed_chunks > 0
    assert [p.id for p in repo.catalog.points()] == [second.id, third.id]  # still held
    assert verify(repo).ok


def test_a_keep_rule_added_later_is_honoured(repo: Repository, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook locked and flagged points will use: a rule names points and its reason."""
    first, second = _points(repo, tmp_path, 2)

    def locked(_: Repository, points: Sequence[RecoveryPoint]) -> dict[str, str]:
        return {points[0].id: "locked"}

    monkeypatch.setattr(retention, "KEEP_RULES", [*retention.KEEP_RULES, locked])
    result = retention.prune(repo, "v", Policy(last=1))
    assert result.plan.reasons == {first.id: ["locked"], second.id: ["last"]}
    assert result.deleted == []


def test_bad_requests_are_usage_errors(repo: Repository, tmp_path: Path) -> None:
    _points(repo, tmp_path, 1)
    with pytest.raises(UsageError, match="no retention rule"):
        retention.prune(repo, "v", Policy())
    with pytest.raises(UnknownVolume):
        retention.plan(repo, "nope", Policy(last=1))


def test_machine_points_are_pruned_whole_into_the_hold(repo: Repository,
                                                       tmp_path: Path) -> None:
    """A machine point the policy drops is held whole (every disk), and once reclaimed its
    group goes too: no empty machine point is left listed."""
    store = MachinePoints(repo.catalog)
    disks = {name: _points(repo, tmp_path / name, 2, volume=f"web01-{name}")
             for name in ("vda", "vdb")}
    for n, (vda, vdb) in enumerate(zip(disks["vda"], disks["vdb"], strict=True)):
        store.record(f"mp{n:06d}", "web01", vda.created, "crash", "",
                     [("vda", vda), ("vdb", vdb)])
    first = store.get("mp000000")
    assert first is not None
    # what export, virtualize, vm start and screenshot verification run: every disk, in order
    vda, vdb = disks["vda"][1], disks["vdb"][1]
    latest = disks_of(repo, "web01@latest")
    assert ([p.id for p in latest.points], latest.names) == ([vda.id, vdb.id], ("vda", "vdb"))
    assert latest.what == "machine point mp000001 (web01: vda, vdb)"
    assert disks_of(repo, vda.id).names == () and len(boot_disks(repo, vdb.id).points) == 1
    assert boot_disks(repo, vda.id).machine_point == latest.machine_point  # the boot disk's
    plan = prune_machine(repo, "web01", Policy(last=1))
    assert [mp.id for mp in plan.doomed] == ["mp000000"] and plan.held_until is not None
    assert sorted(p.id for p, _ in marks.held_points(repo)) == sorted(
        m.point.id for m in first.members)
    assert [mp.id for mp in list_machine_points(repo, "web01")] == ["mp000001"]

    marks.hold(repo, [m.point for m in first.members], window=0)  # its window ends now
    retention.purge(repo)
    assert [mp.id for mp in store.list("web01")] == ["mp000001"]
