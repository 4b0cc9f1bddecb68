"""`diff` that could not compare the points prints nothing on stdout (no "0 added, 0
removed, 0 modified" a script would read as "nothing changed"): one error line, exit 1."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.test_cli import ok
from tests.cli.test_repository_access import batch, one_line
from tests.store.helpers import make_image


def test_diff_of_unreadable_points_prints_no_summary(tmp_path: Path) -> None:
    repo, noise = tmp_path / "repo", tmp_path / "noise.img"
    ok("init", "--repo", repo)
    make_image(noise, 1024 * 1024, seed=7, fill=1.0)  # no file system: nothing to compare
    first = json.loads(ok("backup", "--repo", repo, "--volume", "v", noise, "--json"))["point"]
    make_image(noise, 1024 * 1024, seed=8, fill=1.0)
    ok("backup", "--repo", repo, "--volume", "v", noise)
    results = batch([["diff", "--repo", repo, first, "v@latest"],
                     ["diff", "--repo", repo, first, "v@latest", "--json"]])
    for result in results:
        assert result["stdout"] == "", result
        one_line(result, "could not compare points", first, "cairn ls")
