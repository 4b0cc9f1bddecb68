"""The prune finds packs hidden behind a delete marker on a real SeaweedFS bucket with Object
Lock: what prunes older than `cloud_pack_locks`'s records left (a locked condemned pack and
its index DELETEd, so only a marker over the locked version, and its notice gone).

Such a pack is condemned again, recorded under ``held/packs/`` while locked, and deleted,
every version, once its lock has passed. A hidden pack that the remaining point needs is
brought back instead (its markers removed), never condemned. Every point restores byte for
byte throughout, read by a node with an empty cache.

A node that never read a hidden pack's index (a fresh cache, the lock already passed) reads
it past the marker and decides from its chunks as for a known pack; one whose index does not
open with the repository's key is kept and named in the report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import zstandard

from cairn.store.cloud import open_cloud
from cairn.store.cloud_prune import PruneReport, packs_of, prune
from cairn.store.records import Sealer
from tests.appliance.harness import wait_for
from tests.replication.locked import (
    LockedBucket,
    grace_passes,
    pack_keys,
    restores_whole,
    server_time,
    two_points_deleted,
    versions,
)
from tests.s3server import SeaweedS3

SHORT = 10.0
DAY = 86400.0


def _prune(url: str, cache: Path | None = None) -> PruneReport:
    """A prune, from a node with its own cache at ``cache`` if given (none read yet)."""
    with pytest.MonkeyPatch.context() as patch:
        if cache is not None:
            patch.setenv("CAIRN_CACHE", str(cache))
        with open_cloud(url, None) as cloud:
            return prune(cloud, wait=0)


def _condemned(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               name: str, seed: int) -> tuple[LockedBucket, dict[str, str], list[str]]:
    """`two_points_deleted`, then a first prune's condemned packs (two or more)."""
    site, want = two_points_deleted(s3_server, tmp_path, monkeypatch, name, seed=seed)
    condemned = _prune(site.url).condemned
    assert len(condemned) >= 2, "the points left too few packs to condemn"
    return site, want, condemned


def test_prune_finds_packs_an_older_prune_hid_records_then_deletes_them_and_revives_live(
        s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site, want, condemned = _condemned(s3_server, tmp_path, monkeypatch, "hidden", 5)
    s3, bucket, url = site.s3, site.name, site.url

    # The state an older prune left: each condemned pack locked (one for a day, the others
    # for seconds), then it and its index DELETEd (a marker over the locked version) and its
    # notice gone. One pack the remaining point needs is hidden too.
    made = server_time(s3, bucket)
    with open_cloud(url, None) as cloud:
        live = sorted(set(packs_of(cloud).pack_ids()) - set(condemned))[0]
        locks = cloud.remote.versions  # type: ignore[union-attr]
        for pack in [*condemned, live]:
            for key in pack_keys(pack):
                locks.extend(key.removeprefix("r/"),
                             made + (DAY if pack in (condemned[0], live) else SHORT))
    for pack in [*condemned, live]:
        for key in pack_keys(pack):
            s3.delete_object(Bucket=bucket, Key=key)
    for pack in condemned:
        s3.delete_object(Bucket=bucket, Key=f"r/condemned/{pack}")
    hidden = set(versions(s3, bucket, "r/packs/")[1])
    assert {pack_keys(p)[0] for p in [*condemned, live]} <= hidden

    found = _prune(url)
    assert set(condemned) <= set(found.condemned) and live not in found.condemned
    assert found.lifted == [live]
    for key in pack_keys(live):  # back, as it was
        assert s3.head_object(Bucket=bucket, Key=key)

    grace_passes(site)
    held = _prune(url)
    assert condemned[0] not in held.deleted and set(held.deleted) <= set(condemned[1:])
    assert held.held + len(held.deleted) == len(condemned)
    assert held.held_until is not None and held.held_until >= made + DAY - 5
    records = versions(s3, bucket, "r/held/packs/")[0]
    assert any(k.endswith(condemned[0]) for k in records)
    restores_whole(url, want, tmp_path / "held")

    wait_for(lambda: server_time(s3, bucket) > made + SHORT + 1, 60, 0.5)
    freed = _prune(url)
    assert sorted([*held.deleted, *freed.deleted]) == sorted(condemned[1:])
    assert freed.held == 1
    keys, markers = versions(s3, bucket, "r/")
    for pack in condemned[1:]:
        assert not set(pack_keys(pack)) & {*keys, *markers}
        assert f"r/condemned/{pack}" not in keys
    assert set(pack_keys(condemned[0])) <= set(keys)
    records = [k for k in keys if k.startswith("r/held/packs/")]
    assert len(records) == 1 and records[0].endswith(condemned[0])
    restores_whole(url, want, tmp_path / "freed", check=True)


def test_prune_reads_hidden_indexes_it_never_read_and_keeps_a_pack_it_cannot_read(
        s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site, want, condemned = _condemned(s3_server, tmp_path, monkeypatch, "unread", 7)
    s3, bucket, url = site.s3, site.name, site.url
    with open_cloud(url, None) as cloud:
        live = sorted(set(packs_of(cloud).pack_ids()) - set(condemned))[0]

    # Packs hidden behind a marker over a version no lock keeps any more (readers no
    # longer read past it), their notices gone: the dead ones, one the remaining point
    # needs, and one whose newest index is sealed with another key.
    bad, dead = condemned[0], condemned[1:]
    index = f"r/index/{bad}"
    record = json.loads(zstandard.ZstdDecompressor().decompress(
        s3.get_object(Bucket=bucket, Key=index)["Body"].read()))
    record.pop("mac")
    forged = json.dumps(Sealer(os.urandom(32)).seal(record)).encode()
    s3.put_object(Bucket=bucket, Key=index, Body=zstandard.ZstdCompressor().compress(forged))
    for pack in [*condemned, live]:
        for key in pack_keys(pack):
            s3.delete_object(Bucket=bucket, Key=key)
    for pack in condemned:
        s3.delete_object(Bucket=bucket, Key=f"r/condemned/{pack}")

    fresh = _prune(url, tmp_path / "fresh")
    assert fresh.lifted == [live] and live not in fresh.condemned
    assert sorted(fresh.condemned) == sorted(dead)
    assert fresh.unreadable == [bad] and fresh.json()["packs_kept_unreadable"] == [bad]
    for key in pack_keys(live):  # back, as it was
        assert s3.head_object(Bucket=bucket, Key=key)

    grace_passes(site)
    freed = _prune(url, tmp_path / "later")
    assert sorted(freed.deleted) == sorted(dead) and freed.unreadable == [bad]
    keys, markers = versions(s3, bucket, "r/")
    for pack in dead:
        assert not set(pack_keys(pack)) & {*keys, *markers}
    assert set(pack_keys(bad)) <= set(keys)
    restores_whole(url, want, tmp_path / "freed", check=True)
