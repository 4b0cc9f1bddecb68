"""The prune's kept counts of other appliances' volumes (`cloud_live`), on real SeaweedFS.

A node that never wrote a volume counts none of its runs (`cloud_counts`); what its prune
takes as live must still be exactly every chunk those points reach, while points come and
go at either end and in the middle, and its block maps must be walked once, not at every
prune. The reference is the slow way the prune used before: every volume counted inside
`cloud_counts.view`, rolled back after.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.replication.replicate import replicate
from cairn.store.cloud import init_cloud, open_cloud
from cairn.store.cloud_counts import settle, uncounted, view
from cairn.store.cloud_live import chains, live, patch, walk
from cairn.store.delete import delete_points
from cairn.store.repository import Repository
from tests.s3server import SeaweedS3
from tests.store.helpers import backup, make_image, mutate


def _reference(repo: Repository) -> set[bytes]:
    with view(repo):
        return {d for d, refs in repo.catalog.chunk_refs().items() if refs > 0}


class Writer:
    """An appliance backing up two volumes and replicating them to the bucket."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder, self.url = folder, url
        self.local = Repository.init(folder / "local")
        self.images = {}
        for n in range(2):
            path = folder / f"disk{n}.img"
            self.images[f"vol{n}"] = (path, make_image(path, 1024 * 1024, seed=n, fill=0.6))
        self.rounds = 0

    def round(self) -> None:
        for n, (volume, (path, data)) in enumerate(self.images.items()):
            ranges = mutate(path, data, seed=self.rounds * 10 + n) if self.rounds else None
            backup(self.local, volume, path, ranges)
        self.rounds += 1

    def publish(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CAIRN_CACHE", str(self.folder / "cache-writer"))
        with open_cloud(self.url, None) as cloud:
            replicate(self.local, cloud)


@pytest.fixture
def writer(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[Writer]:
    for name, value in s3_server.cairn_env(tmp_path, "cache-writer").items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.bucket}/live-{uuid.uuid4().hex[:10]}"
    init_cloud(url, None).close()
    made = Writer(tmp_path, url)
    yield made
    made.local.close()


def _reader(writer: Writer, monkeypatch: pytest.MonkeyPatch) -> Repository:
    monkeypatch.setenv("CAIRN_CACHE", str(writer.folder / "cache-reader"))
    return open_cloud(writer.url, None)


def test_kept_counts_follow_points_coming_and_going_and_walk_each_block_map_once(
        writer: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(8):
        writer.round()
    writer.publish(monkeypatch)
    with _reader(writer, monkeypatch) as reader:
        assert uncounted(reader)  # the reader writes none of these volumes
        assert live(reader) == _reference(reader)

        fetched: list[bytes] = []
        fetch = reader.nodes._fetch
        reader.nodes = type(reader.nodes)(lambda d: fetched.append(d) or fetch(d))
        again = live(reader)
        assert fetched == []  # nothing walked again
        assert again == _reference(reader)

        # Points go at the start, in the middle and at the end, and new ones come.
        for step in range(3):
            points = reader.catalog.points()
            gone = [points[0], points[len(points) // 2]] if step != 1 else [points[-1]]
            delete_points(reader, gone)
            writer.round()
            writer.publish(monkeypatch)
            reader.remote.sync(reader)  # type: ignore[union-attr]
            assert live(reader) == _reference(reader), step

        # A volume this node starts counting (it writes it now) leaves the kept counts.
        settle(reader)
        assert not uncounted(reader)
        assert live(reader) == _reference(reader)
        rows = reader.catalog.db.execute("SELECT COUNT(*) FROM cloud_live_runs").fetchone()
        assert rows == (0,)


def test_a_patch_of_the_runs_equals_a_walk_afresh(
        writer: Writer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Taking points out of and putting points into a volume's chain, anywhere, changes its
    runs exactly as walking the new chain from scratch would."""
    for _ in range(6):
        writer.round()
    writer.publish(monkeypatch)
    with _reader(writer, monkeypatch) as reader:
        volumes = chains(reader, uncounted(reader))
        rnd = random.Random(5)
        for chain in volumes.values():
            for _ in range(12):
                before = sorted(rnd.sample(chain, rnd.randrange(0, len(chain) + 1)))
                after = sorted(rnd.sample(chain, rnd.randrange(1, len(chain) + 1)))
                patched = walk(reader.nodes, before)
                patched.update(patch(reader.nodes, before, after))
                assert +patched == walk(reader.nodes, after)
                assert not -patched  # no count below zero
