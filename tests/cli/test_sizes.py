"""Sizes true when shown: what deleting a point would free now (`points`, `delete
--dry-run`, `prune --dry-run`, `stats` per volume) equals what the delete then frees, and a
point's figure follows its neighbours' deletion instead of staying what its backup added."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.cli.test_cli import ok
from tests.cli.test_repository_access import batch
from tests.store.helpers import make_image, mutate


def _json(result: dict[str, object]) -> object:
    assert result["code"] == 0, result
    return json.loads(str(result["stdout"]))


def test_frees_is_what_a_delete_frees(tmp_path: Path) -> None:
    repo, image = tmp_path / "repo", tmp_path / "disk.img"
    ok("init", "--repo", repo)
    data = make_image(image, 2 * 1024 * 1024, seed=4, fill=1.0)
    first = json.loads(ok("backup", "--repo", repo, "--volume", "v", image, "--json"))
    mutate(image, data, seed=5, writes=3)
    ok("backup", "--repo", repo, "--volume", "v", image)
    r = batch([["points", "--repo", repo, "--json"],
               ["delete", "--repo", repo, first["point"], "--dry-run", "--json"],
               ["prune", "--repo", repo, "--volume", "v", "--keep-last", "1", "--dry-run",
                "--json"],
               ["stats", "--repo", repo, "--json"],
               ["delete", "--repo", repo, first["point"], "--now", "--json"],
               ["stats", "--repo", repo, "--json"],
               ["points", "--repo", repo, "--json"],
               ["points", "--repo", repo]])
    before, dry, pruned, stats, deleted, after, points = (_json(x) for x in r[:7])
    frees = before[0]["frees"]
    assert 0 < frees < first["bytes_stored"] // 2  # most of it the second point holds too
    assert dry["frees_bytes"] == pruned["frees_bytes"] == deleted["frees_bytes"] == frees
    assert stats["stored_bytes"] - after["stored_bytes"] == frees
    assert stats["by_volume"][0]["frees_bytes"] == stats["stored_bytes"]
    # the second point now holds everything: its figure grew, its backup's did not
    assert points[0]["frees"] == after["stored_bytes"] > points[0]["bytes_stored"]
    assert "FREES" in str(r[7]["stdout"])
    # one time format: Unix seconds, and beside each the same time in ISO 8601 with its zone
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d",
                        points[0]["created_iso"])
