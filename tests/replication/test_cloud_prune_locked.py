"""`cairn cloud prune` on a real SeaweedFS bucket with Object Lock (COMPLIANCE retention).

Condemned packs still locked are not deleted (a DELETE would only hide them behind a marker
and free nothing): the prune leaves them whole, records them, and says how many wait and
until when; once a lock passes, a later prune deletes that pack and its index, every
version. The prune's clock object keeps one version however many prunes run. Every point
restores byte for byte throughout, read by a node with an empty cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cairn.store.cloud import open_cloud
from tests.appliance.harness import wait_for
from tests.replication.locked import (
    grace_passes,
    pack_keys,
    restores_whole,
    server_time,
    two_points_deleted,
    versions,
)
from tests.replication.test_replicate import Cli
from tests.s3server import SeaweedS3

SHORT = 8.0
DAY = 86400.0


def test_prune_leaves_locked_condemned_packs_whole_then_deletes_them_all_versions(
        s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site, want = two_points_deleted(s3_server, tmp_path, monkeypatch, "prune", seed=3)
    s3, bucket, url = site.s3, site.name, site.url
    cli = Cli(s3_server, tmp_path / "cache")
    cli.env.update(site.env)
    condemned = _prune(cli, url)["packs_condemned"]
    assert len(condemned) >= 2, "the points left too few packs to condemn"

    # Lock them all: one for a day, the others for seconds.
    made = server_time(s3, bucket)
    with open_cloud(url, None) as cloud:
        locks = cloud.remote.versions  # type: ignore[union-attr]
        for k, pack in enumerate(condemned):
            for key in pack_keys(pack):
                locks.extend(key.removeprefix("r/"), made + (DAY if k == 0 else SHORT))
    grace_passes(site, made)
    held = _prune(cli, url)
    assert held["packs_deleted"] == [] and held["packs_held"] == len(condemned)
    assert made + DAY - 5 <= held["packs_held_until"] <= made + DAY + 5
    assert versions(s3, bucket, "r/packs/")[1] == []  # no delete marker hides a pack
    for pack in condemned:
        assert s3.head_object(Bucket=bucket, Key=pack_keys(pack)[0])
    restores_whole(url, want, tmp_path / "held")

    # The seconds pass: those packs go, every version; the day-long one still waits.
    wait_for(lambda: server_time(s3, bucket) > made + SHORT + 1, 60, 0.5)
    freed = _prune(cli, url)
    assert sorted(freed["packs_deleted"]) == sorted(condemned[1:])
    assert freed["packs_held"] == 1 and freed["packs_held_until"] >= made + DAY - 5
    keys, markers = versions(s3, bucket, "r/")
    for pack in condemned[1:]:
        assert not set(pack_keys(pack)) & {*keys, *markers}
    assert set(pack_keys(condemned[0])) <= set(keys)
    records = [k for k in keys if k.startswith("r/held/packs/")]
    assert len(records) == 1 and records[0].endswith(condemned[0])
    assert keys.count("r/prune.time") == 1  # one version, however many prunes ran
    said = cli.ok("cloud", "prune", url)
    assert "1 condemned pack(s) wait for their Object Lock to pass (until " in said, said
    restores_whole(url, want, tmp_path / "freed")


def _prune(cli: Cli, url: str) -> dict[str, Any]:
    report = cli.json("cloud", "prune", url)
    assert isinstance(report, dict)
    return report
