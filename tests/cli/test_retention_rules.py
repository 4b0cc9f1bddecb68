"""Retention rules mean what borg and restic users expect, or are refused saying why:
``--keep-last 0`` (none there, "every period" for cairn's period rules) is refused, and a
cron schedule firing more often than the appliance's minimum interval is refused like
``--every`` is."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.appliance.scheduler import check_cron
from cairn.errors import UsageError
from cairn.store.retention import Policy
from tests.cli.test_cli import ok
from tests.cli.test_repository_access import batch, one_line


def test_keep_last_zero_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    result = batch([["prune", "--repo", repo, "--volume", "v", "--keep-last", "0"]])[0]
    one_line(result, "--keep-last 0", "keep none", "leave the rule out")
    with pytest.raises(UsageError, match="last=0"):
        Policy.parse("daily=7,last=0")
    assert Policy.parse("monthly=0").monthly == 0  # a period rule's 0 is still "forever"


@pytest.mark.parametrize("expr", ["* * * * *", "*/2 * * * *", "0,1 3 * * *"])
def test_cron_faster_than_the_minimum_is_refused(expr: str) -> None:
    with pytest.raises(UsageError, match="under the minimum interval of 300 s"):
        check_cron(expr, 300)


def test_cron_at_or_over_the_minimum_is_accepted() -> None:
    for expr in ("*/5 * * * *", "0 3 * * *", "30 2 * * 1-5"):
        assert check_cron(expr, 300) == expr
