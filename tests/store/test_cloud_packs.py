"""Chunks of a cloud repository travel and stay in packs (`cloud_packs`), on real SeaweedFS.

What the bucket holds after a replication (packs and their indexes, no chunk objects), a
second node reading every chunk through the indexes alone with few ranged GETs and
learning the chunks' sizes before compression from them (unknown from indexes written
before they carried them), and bad packs or indexes refused with errors naming both objects.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import zstandard

from cairn.cli import main
from cairn.errors import Corruption, MissingChunk
from cairn.replication.replicate import replicate
from cairn.store.backends.s3 import S3Backend, open_s3_url
from cairn.store.catalog import RecoveryPoint
from cairn.store.cloud import Cloud, init_cloud, open_cloud
from cairn.store.cloud_counts import view
from cairn.store.cloud_feed import new_key
from cairn.store.repository import Repository
from cairn.store.stats import repository_stats
from cairn.store.verify import verify
from tests.s3server import SeaweedS3
from tests.store.helpers import backup, digest, make_image, restored_digest


@dataclass
class Sent:
    url: str
    real: S3Backend
    point: RecoveryPoint
    want: str
    work: Path
    monkeypatch: pytest.MonkeyPatch

    def node(self, name: str) -> Repository:
        """The repository opened by a node with its own (new) cache folder."""
        self.monkeypatch.setenv("CAIRN_CACHE", str(self.work / name))
        return open_cloud(self.url, None)

    def packs(self) -> list[str]:
        return sorted(self.real.list("packs"))


@pytest.fixture
def sent(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[Sent]:
    """A 3 MiB point replicated into packs of 256 KiB."""
    for name, value in {**s3_server.cairn_env(tmp_path),
                        "CAIRN_CLOUD_PACK_BYTES": str(256 << 10)}.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.bucket}/packs-{uuid.uuid4().hex[:10]}"
    img = tmp_path / "disk.img"
    data = make_image(img, 3 * 1024 * 1024, seed=12, fill=0.7)
    with Repository.init(tmp_path / "local") as local:
        point = backup(local, "web01-sda", img)
        init_cloud(url, None).close()
        with open_cloud(url, None) as cloud:
            replicate(local, cloud)
    yield Sent(url, open_s3_url(url), point, digest(data), tmp_path, monkeypatch)


def test_chunks_travel_in_packs_and_another_node_reads_them_by_ranges(sent: Sent) -> None:
    names = list(sent.real.list(""))
    assert not [n for n in names if n.startswith("chunks/")]
    packs = sent.packs()
    assert len(packs) > 4
    assert {f"index/{p.rpartition('/')[2]}" for p in packs} == set(sent.real.list("index"))
    assert all(p.split("/")[1] == p[-2:] for p in packs)
    with sent.node("second-node") as other:
        with view(other):  # the second node counts no runs of a volume it does not write
            chunks = len(other.catalog.chunk_refs())  # (its block map read for this)
            stored = other.catalog.chunk_totals().stored
        ranged: list[str] = []
        real_range = other.remote.backend.get_range  # type: ignore[union-attr]
        other.remote.backend.get_range = (  # type: ignore[union-attr]
            lambda name, start, end: ranged.append(name) or real_range(name, start, end))
        assert restored_digest(other, other.catalog.point(sent.point.id),  # type: ignore[arg-type]
                               sent.work / "out.img") == sent.want
        assert 0 < len(ranged) < chunks / 4, (len(ranged), chunks)
        assert stored == sum(size for _name, size in sent.real.sizes("packs"))
        assert verify(other, read_data=True).ok


def _spoil(sent: Sent, name: str, how: str) -> None:
    body = sent.real.get(name)
    if how == "flip":
        middle = len(body) // 2
        sent.real.put(name, body[:middle] + bytes([body[middle] ^ 1]) + body[middle + 1:])
    elif how == "truncate":
        sent.real.put(name, body[:-10])
    else:
        sent.real.delete(name)


@pytest.mark.parametrize(("how", "error", "says"), [
    ("flip", Corruption, "does not match its hash|fails|damaged|decompress"),
    ("truncate", Corruption, "truncated"),
    ("delete", MissingChunk, "is missing"),
])
def test_a_bad_pack_is_named_with_its_index(sent: Sent, how: str, error: type[Exception],
                                            says: str) -> None:
    for pack in sent.packs():
        if how != "delete" or pack == sent.packs()[0]:
            _spoil(sent, pack, how)
    with pytest.raises(error) as failed, sent.node("reader") as cloud, view(cloud):
        list(cloud.chunks.get_many(list(cloud.catalog.chunk_refs()), lambda d, _b: d))
    text = str(failed.value)
    assert "\n" not in text and "packs/" in text and "index index/" in text, text
    assert failed.match(says)


def _rewrite_index(sent: Sent, name: str, change: str) -> str:
    """Put an altered copy of index ``name``: its JSON changed (no longer sealed), or
    its very bytes under a new pack's name; returns the index object to blame."""
    raw = sent.real.get(name)
    if change == "altered":
        record = json.loads(zstandard.ZstdDecompressor().decompress(raw))
        record["size"] += 1
        sent.real.put(name, zstandard.ZstdCompressor().compress(json.dumps(record).encode()))
        return name
    moved = f"index/{new_key(0.0)}"
    sent.real.put(moved, raw)
    return moved


@pytest.mark.parametrize(("change", "says"), [
    ("altered", "fails authentication"), ("moved", "names another pack or repository")])
def test_an_index_that_fails_its_seal_or_names_another_pack_is_refused(
        sent: Sent, change: str, says: str) -> None:
    blamed = _rewrite_index(sent, sorted(sent.real.list("index"))[0], change)
    with pytest.raises(Corruption) as failed:
        sent.node("new-node").close()
    text = str(failed.value)
    assert "\n" not in text and blamed in text and failed.match(says), text
    with sent.node("cache") as known:  # the node that sent it needs no index again
        assert restored_digest(known, known.catalog.point(sent.point.id),  # type: ignore[arg-type]
                               sent.work / "out.img") == sent.want


def _reseal(sent: Sent, name: str, plain: Callable[[list[int]], object]) -> None:
    """Put index ``name`` again, sealed with the repository's key, its ``plain`` list (the
    chunks' sizes before compression) changed by ``plain``; None drops it, as an index
    written before it was."""
    with sent.node("cache") as cache:
        sealer = cast("Cloud", cache.remote).sealer
    record = json.loads(zstandard.ZstdDecompressor().decompress(sent.real.get(name)))
    del record["mac"]
    sizes = plain(record.pop("plain"))
    if sizes is not None:
        record["plain"] = sizes
    sent.real.put(name, zstandard.ZstdCompressor().compress(
        json.dumps(sealer.seal(record)).encode()))


def _sizes(repo: Repository) -> dict[bytes, int]:
    """The sizes before compression a node knows, by chunk."""
    with view(repo):
        return {d: plain for d, (plain, _stored) in repo.catalog.chunk_sizes(
            list(repo.catalog.chunk_refs())).items()}


def test_a_node_learns_sizes_before_compression_from_the_indexes_and_old_ones_stay_unknown(
        sent: Sent, capsys: pytest.CaptureFixture[str]) -> None:
    with sent.node("cache") as cache:
        senders = _sizes(cache)
    with sent.node("new-node") as new:
        assert _sizes(new) == senders and len(senders) > 40
        assert repository_stats(new).unique_bytes == sum(senders.values())

    old = sorted(sent.real.list("index"))[1:]  # as written before indexes had sizes
    for name in old:
        _reseal(sent, name, lambda sizes: None)
    with sent.node("old-node") as reader:
        with view(reader):
            in_old = {d for name in old for d, _o, _n in reader.chunks.backend.pack_info(  # type: ignore[attr-defined]
                name.removeprefix("index/")).chunks}
        learnt = _sizes(reader)
        assert learnt == {d: n for d, n in senders.items() if d not in in_old} and learnt
        stats = repository_stats(reader)
        assert stats.unique_bytes is None and stats.dedup_ratio is None
        assert stats.unsized_chunks == len(senders) - len(learnt)
        assert stats.stored_bytes == sum(size for _name, size in sent.real.sizes("packs"))
        assert restored_digest(reader, reader.catalog.point(sent.point.id),  # type: ignore[arg-type]
                               sent.work / "out.img") == sent.want
    assert main(["stats", "--repo", sent.url]) == 0  # the same node, as a user asks
    said = capsys.readouterr().out
    assert f"holding ? ({stats.unsized_chunks} of them of unknown size before compression" \
        in said and "dedup ratio        ?" in said, said


@pytest.mark.parametrize("lie", [
    lambda sizes: [1 << 30, *sizes[1:]],  # more than any chunk of the repository
    lambda sizes: sizes[:-1],  # one short
    lambda sizes: [-1, *sizes[1:]],
    lambda sizes: [str(sizes[0]), *sizes[1:]],
    lambda sizes: {"0": sizes[0]},
], ids=["too-big", "one-short", "negative", "text", "not-a-list"])
def test_an_index_whose_sizes_before_compression_lie_is_refused(
        sent: Sent, lie: Callable[[list[int]], object]) -> None:
    blamed = sorted(sent.real.list("index"))[0]
    _reseal(sent, blamed, lie)
    with pytest.raises(Corruption) as failed:
        sent.node("new-node").close()
    text = str(failed.value)
    assert "\n" not in text and blamed in text and "packs/" in text, text
    assert failed.match("sizes before compression")
