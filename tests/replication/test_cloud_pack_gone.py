"""A writer never relies on a pack another node's prune deleted, on real SeaweedFS.

A node's pack index keeps every pack it ever read; another node's prune deletes a dead pack
(pack, index, then notice) without telling it. When the same blocks are sent again later (a
file restored, a disk rolled back), the writer finds them in that pack by its index, and no
notice says the pack is going: it must still find that the pack is gone and send the chunks
again, or it publishes a point whose data is not in the bucket.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cairn.replication.replicate import replicate
from cairn.store.cloud import init_cloud, open_cloud
from cairn.store.cloud_prune import packs_of, prune
from cairn.store.delete import delete_points
from cairn.store.repository import Repository
from tests.appliance.harness import wait_for
from tests.replication.locked import server_time
from tests.s3server import SeaweedS3
from tests.store.helpers import backup, digest, make_image, restored_digest

GRACE = 1.0


def test_a_writer_sends_again_the_chunks_of_a_pack_a_prune_elsewhere_deleted(
        s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_server.cairn_env(tmp_path, "cache-a").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAIRN_CLOUD_LOCK_SECONDS", str(GRACE))
    url = f"s3://{s3_server.bucket}/gone-{uuid.uuid4().hex[:8]}"
    s3 = s3_server.client()
    kept, image = tmp_path / "kept.img", tmp_path / "disk.img"
    make_image(kept, 512 * 1024, seed=2, fill=0.6)
    data = make_image(image, 1024 * 1024, seed=9, fill=0.6)
    with Repository.init(tmp_path / "local") as local, init_cloud(url, None) as writer:
        backup(local, "kept", kept)
        replicate(local, writer)  # a point that stays, in packs of its own
        first = backup(local, "web01-sda", image)
        replicate(local, writer)
        known = set(packs_of(writer).pack_ids())
        doomed = writer.catalog.point(first.id)
        assert doomed is not None
        delete_points(writer, [doomed])
        delete_points(local, [first])

        # Another node's prune condemns its packs, and a grace later deletes them.
        monkeypatch.setenv("CAIRN_CACHE", str(tmp_path / "cache-b"))
        for _ in range(2):
            stamp = server_time(s3, s3_server.bucket)
            wait_for(lambda t=stamp: server_time(s3, s3_server.bucket) > t + GRACE + 1, 30, 0.2)
            with open_cloud(url, None) as other:
                deleted = prune(other, wait=0).deleted
        assert deleted and set(deleted) <= known

        # The same blocks again: the writer's index still names the deleted packs.
        monkeypatch.setenv("CAIRN_CACHE", str(tmp_path / "cache-a"))
        second = backup(local, "web01-sda", image)
        replicate(local, writer)
        assert not set(deleted) & set(packs_of(writer).pack_ids())
    monkeypatch.setenv("CAIRN_CACHE", str(tmp_path / "cache-c"))
    with open_cloud(url, None) as reader:
        point = reader.catalog.point(second.id)
        assert point is not None
        assert restored_digest(reader, point, tmp_path / "out.img") == digest(data)
