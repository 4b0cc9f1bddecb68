"""The one retention planner: policy rules, keep rules, and the report of what stayed why."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from cairn.errors import UnknownVolume, UsageError
from cairn.ops import retention
from cairn.ops.clones import clone, remove
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository
from cairn.store.retention import Policy
from tests.store.helpers import backup, make_image, mutate


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    with Repository.init(tmp_path / "repo") as repo:
        yield repo


def _points(repo: Repository, tmp_path: Path, count: int) -> list[RecoveryPoint]:
    img = tmp_path / "disk.img"
    data = make_image(img, 512 * 1024, seed=1)
    points = []
    for i in range(count):
        if i:
            mutate(img, data, seed=i)
        points.append(backup(repo, "v", img))
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
    assert result.deleted == [first.id, third.id] and result.freed_chunks > 0
    assert [p.id for p in repo.catalog.points()] == [second.id, fourth.id]

    remove(repo, ["held"])
    assert retention.prune(repo, "v", Policy(last=1)).deleted == [second.id]


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
