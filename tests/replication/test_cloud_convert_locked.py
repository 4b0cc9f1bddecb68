"""`cairn cloud convert` of an immutable legacy repository on a real SeaweedFS bucket with
Object Lock (SeaweedFS enforces COMPLIANCE retention: a locked version cannot be deleted,
`tests/store/test_object_lock.py`).

Each chunk object is locked, some for seconds and some for a day. The conversion packs
every chunk, locks each pack as long as the objects whose chunks it holds, deletes none
of the locked objects (a DELETE would only hide them) and records them as held, saying how
many and until when; once the short locks pass, a prune deletes those objects, versions
and all, and the day-long ones still wait. Every point restores byte for byte throughout,
read by a node with an empty cache.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from cairn.replication.replicate import replicate
from cairn.store.chunks import chunk_name
from cairn.store.cloud import init_cloud, open_cloud
from cairn.store.repository import Repository
from tests.appliance.harness import wait_for
from tests.replication.locked import (
    locked_bucket,
    locked_until,
    restores_whole,
    server_time,
    versions,
)
from tests.replication.test_replicate import Cli
from tests.s3server import SeaweedS3
from tests.store.helpers import backup, digest, make_image, mutate

SHORT = 15.0
DAY = 86400.0


def test_convert_under_object_lock_holds_locked_objects_then_a_prune_deletes_them(
        s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = locked_bucket(s3_server, tmp_path, monkeypatch, "convert", {
        "CAIRN_CLOUD_PACK_BYTES": str(128 << 10),
        "CAIRN_CLOUD_LOCK_SECONDS": "1"})
    s3, bucket, url = site.s3, site.name, site.url
    image = tmp_path / "disk.img"
    data = make_image(image, 1024 * 1024, seed=5, fill=0.6)
    want = {}
    with Repository.init(tmp_path / "local") as local:
        for seed in range(2):
            mutate(image, data, seed=seed, writes=6)
            want[backup(local, "web01-sda", image).id] = digest(data)
        with init_cloud(url, None) as cloud:
            replicate(local, cloud)

    # A legacy immutable repository: each chunk its own object, locked; no pack, no index.
    short, long = [], []
    made = time.time()
    with open_cloud(url, None) as cloud:
        remote = cloud.remote
        assert remote is not None and remote.versions is not None
        for k, chunk in enumerate(sorted(cloud.catalog.chunk_refs())):
            name = chunk_name(chunk)
            (short if k % 2 else long).append(name)
            remote.versions.put(name, cloud.chunks.backend.get(name),
                                made + (SHORT if k % 2 else DAY))
        for prefix in ("packs", "index"):
            remote.backend.delete_many(list(remote.backend.list(prefix)))
        shutil.rmtree(cloud.path)
    assert versions(s3, bucket, "r/packs/") == ([], [])

    cli = Cli(s3_server, tmp_path / "cache")
    cli.env.update(site.env)
    converted = cli.json("cloud", "convert", url)
    assert isinstance(converted, dict)
    legacy = len(short) + len(long)
    assert converted["chunks_packed"] == legacy and converted["packs_written"]
    # Locked objects are not deleted (a DELETE would only hide them): held, and said so.
    assert converted["objects_deleted"] + converted["held_objects"] == legacy
    assert converted["held_objects"] >= len(long)
    assert converted["held_until"] >= time.time() + DAY - 120
    keys, markers = versions(s3, bucket, "r/chunks/")
    assert len(keys) == legacy - converted["objects_deleted"] and markers == []
    # Each pack (and its index) is locked at least as long as what it now holds.
    packs = versions(s3, bucket, "r/packs/")[0]
    assert len(packs) == len(converted["packs_written"])
    for pack in converted["packs_written"]:
        for key in (f"r/packs/{pack[-2:]}/{pack}", f"r/index/{pack}"):
            assert locked_until(s3, bucket, key) >= time.time() + SHORT - 60
    assert max(locked_until(s3, bucket, k) for k in packs) >= time.time() + DAY - 120
    notices = versions(s3, bucket, "r/held/")[0]
    assert notices and sum(int(k.split("-")[-2]) for k in notices) == \
        converted["held_objects"]
    restores_whole(url, want, tmp_path / "converted", check=True)

    # Once the short locks pass, a prune deletes those objects, versions and all.
    wait_for(lambda: server_time(s3, bucket) > made + SHORT + 1, timeout=60, every=0.5)
    pruned = cli.json("cloud", "prune", url)
    assert isinstance(pruned, dict)
    assert pruned["legacy_held"] == len(long)
    assert pruned["legacy_released"] == converted["held_objects"] - len(long)
    assert pruned["legacy_held_until"] >= time.time() + DAY - 120
    keys, markers = versions(s3, bucket, "r/chunks/")
    assert sorted(keys) == sorted(f"r/{n}" for n in long) and markers == []
    said = cli.ok("cloud", "convert", url)
    assert said.startswith("packed 0 chunk(s) (0 B) into 0 pack(s), deleted 0 legacy "
                           f"object(s); {len(long)} packed legacy object(s) wait for their "
                           "Object Lock to pass (until "), said
    restores_whole(url, want, tmp_path / "released", check=True)

