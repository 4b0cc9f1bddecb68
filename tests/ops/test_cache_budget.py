"""The exports of one machine share one cache budget: reservations held by live processes
never add up past it, and a killed export's share comes back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cairn.ops.cache_budget import Budget, held, machine_budget, reserve
from cairn.store.reader import CACHE_BYTES
from tests.cli.test_cli import ROOT

MIB = 1024 * 1024
HOLDER = """
import sys
from pathlib import Path
from cairn.ops.cache_budget import Budget, reserve
budget = Budget(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
with reserve(budget, int(sys.argv[4])) as size:
    print(size, flush=True)
    sys.stdin.read()
"""


def holder(budget: Budget, want: int) -> tuple[subprocess.Popen[str], int]:
    """A process that reserves ``want`` of ``budget`` and holds it until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(budget.folder),
                             str(budget.total), str(budget.available), str(want)],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_exports_at_once_share_the_budget_and_a_dead_ones_share_returns(tmp_path: Path) -> None:
    budget = Budget(tmp_path / "ledger", 100 * MIB, 1024 * MIB)
    first, got_first = holder(budget, 60 * MIB)
    second, got_second = holder(budget, 60 * MIB)
    try:
        assert (got_first, got_second) == (60 * MIB, 40 * MIB)
        assert sorted(held(budget.folder)) == [40 * MIB, 60 * MIB]
        first.kill()
        first.wait(timeout=10)
        with reserve(budget, 60 * MIB) as size:  # the killed process's 60 MiB came back
            assert size == 60 * MIB
            assert sum(held(budget.folder)) == 100 * MIB
    finally:
        for proc in (first, second):
            proc.kill()
            proc.wait(timeout=10)
    assert held(budget.folder) == []
    assert list(budget.folder.glob("*.share")) == []


def test_a_share_is_capped_by_memory_available_and_floored(tmp_path: Path) -> None:
    budget = Budget(tmp_path / "ledger", 100 * MIB, 70 * MIB)
    with reserve(budget, 80 * MIB) as capped, reserve(budget, 80 * MIB) as spent, \
            reserve(budget, 500 * MIB, exact=True) as asked:
        assert (capped, spent, asked) == (70 * MIB, CACHE_BYTES, 500 * MIB)


def test_the_budget_is_a_quarter_of_the_memory(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    8000000 kB\n")
    budget = machine_budget(meminfo)
    assert (budget.total, budget.available) == (6_000_000 * 1024, 2_000_000 * 1024)

