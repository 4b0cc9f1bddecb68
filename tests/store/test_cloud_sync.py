"""Incremental sync of a cloud repository's cache (`cloud_sync`), against real SeaweedFS.

A second node learns what the first publishes, deletes and marks from the feed alone: a
sync with nothing new is one listing, whatever the number of points; what was written
without a feed entry (an older cairn, a writer that died) is found by the next full sync.
Many new points, marks and machine points come in one batch another node's sync wrote
(`cloud_batch`); a batch that fails or was never written costs requests, never a point.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cairn.replication.replicate import replicate
from cairn.store import cloud_batch, cloud_counts, cloud_feed, cloud_machines, cloud_sync, marks
from cairn.store.backends.s3 import S3Backend, open_s3_url
from cairn.store.catalog import RecoveryPoint
from cairn.store.cloud import Cloud, init_cloud, open_cloud, point_object
from cairn.store.delete import delete_points
from cairn.store.machine_points import MachinePoints
from cairn.store.records import Sealer
from cairn.store.repository import Repository
from cairn.store.stats import repository_stats
from cairn.store.verify import verify
from tests.s3server import SeaweedS3
from tests.store.cloud_points import Requests, feed_names, plant_points
from tests.store.faulty_s3 import Faults, FaultyS3
from tests.store.helpers import backup, digest, make_image, mutate, restored_digest


@dataclass
class Nodes:
    url: str
    local: Repository
    points: list[tuple[RecoveryPoint, str]]
    work: Path
    monkeypatch: pytest.MonkeyPatch

    def open(self, node: str, faults: Faults | None = None) -> Repository:
        """The repository through ``node``'s own cache (another appliance), its requests
        through ``faults`` if given."""
        self.monkeypatch.setenv("CAIRN_CACHE", str(self.work / f"cache-{node}"))
        bucket = None if faults is None else FaultyS3(open_s3_url(self.url), faults)
        return open_cloud(self.url, None, bucket=bucket)


@pytest.fixture
def nodes(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[Nodes]:
    for name, value in s3_server.cairn_env(tmp_path, "cache-a").items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.bucket}/sync-{uuid.uuid4().hex[:10]}"
    local = Repository.init(tmp_path / "local")
    img = tmp_path / "disk.img"
    data = make_image(img, 1024 * 1024, seed=3, fill=0.5)
    points = []
    for k in range(2):
        points.append((backup(local, "web01-sda", img), digest(data)))
        mutate(img, data, seed=40 + k, writes=3)
    init_cloud(url, None).close()
    try:
        yield Nodes(url, local, points, tmp_path, monkeypatch)
    finally:
        local.close()


def test_a_second_node_learns_changes_from_the_feed_alone(nodes: Nodes) -> None:
    a = nodes.open("a")
    replicate(nodes.local, a)
    template = a.catalog.point(nodes.points[0][0].id)
    assert template is not None
    planted = plant_points(a, template, 120)
    older = plant_points(a, template, 30, announce=False)  # a repository from before the feed
    b = nodes.open("b")  # its first sync reads every prefix
    want = {p.id for p, _ in nodes.points} | set(planted) | set(older)
    assert {p.id for p in b.catalog.points()} == want
    requests = Requests(b)
    assert b.remote.sync(b) is False  # type: ignore[union-attr]
    assert requests.take() == {"stamps": 1}  # nothing new: one listing

    a.remote.prepare(a)  # type: ignore[union-attr]
    doomed = a.catalog.point(planted[5])
    kept = a.catalog.point(planted[6])
    assert doomed is not None and kept is not None
    delete_points(a, [doomed])
    marks.lock(a, [kept], 4102444800.0)
    later = plant_points(a, template, 3)
    unannounced = plant_points(a, template, 2, announce=False)
    requests.take()
    b.remote.sync(b)  # type: ignore[union-attr]
    counts = requests.take()
    # the feed and the packs' new indexes listed, three records and a marks record read, one
    # HEAD to confirm the deleted point's record is gone
    assert counts["stamps"] == 2 and counts["get"] == 4 and counts["exists"] == 1, counts
    want = (want - {doomed.id}) | set(later)
    assert {p.id for p in b.catalog.points()} == want
    assert marks.marks_of(b, kept.id).locked_until == 4102444800.0
    assert doomed.id in {r.id for r in b.remote.removed()}  # type: ignore[union-attr]
    # Each new point is a real one: it restores bit for bit from the second node.
    point = b.catalog.point(later[0])
    assert point is not None
    assert restored_digest(b, point, nodes.work / "out.img") == nodes.points[0][1]

    # verify reads the bucket in full first; so does the daily full sync
    assert verify(b).ok and {p.id for p in b.catalog.points()} == want | set(unannounced)
    nodes.monkeypatch.setenv("CAIRN_CLOUD_FULL_SYNC_SECONDS", "0")
    assert b.remote.sync(b) is True  # type: ignore[union-attr]
    a.close()
    b.close()


def test_a_writer_trims_only_feed_entries_past_their_keeping(s3_server: SeaweedS3) -> None:
    bucket = S3Backend(s3_server.bucket, uuid.uuid4().hex, endpoint_url=s3_server.endpoint,
                       access_key=s3_server.access_key, secret_key=s3_server.secret_key)
    now = time.time()
    old = [cloud_sync.entry(cloud_feed.new_key(now - cloud_sync.FEED_KEEP - 60 * k), "put",
                            f"points/v/{k:012x}.json") for k in range(3)]
    young = [cloud_sync.entry(cloud_feed.new_key(now - 60 * k), "del",
                              f"machines/m/{k:012x}.json") for k in range(2)]
    for name in [*old, *young, "feed/not-cairns"]:
        bucket.put(name, b"")
    assert cloud_sync.trim(bucket, bucket.delete_many, now) == 3
    assert sorted(bucket.list("feed")) == sorted([*young, "feed/not-cairns"])
    assert [cloud_sync.parse(n) for n in young] == [
        cloud_sync.Entry(n, "del", f"machines/m/{k:012x}.json") for k, n in enumerate(young)]


def test_a_sync_lists_only_after_the_newest_entry_taken_and_the_window_now_and_then(
        nodes: Nodes) -> None:
    a = nodes.open("a")
    replicate(nodes.local, a)
    template = a.catalog.point(nodes.points[0][0].id)
    assert template is not None
    b = nodes.open("b")
    fresh = plant_points(a, template, 150)  # all inside the window
    b.remote.sync(b)  # type: ignore[union-attr]  # the window listed once, after the full sync
    assert set(fresh) <= {p.id for p in b.catalog.points()}
    assert len(_batches(b)) == 1  # it read 150 records one by one: a batch for the others
    requests = Requests(b)
    b.remote.sync(b)  # type: ignore[union-attr]  # lists that batch once, reads nothing
    assert requests.take() == {"stamps": 1} and requests.take_names() == 1
    for _ in range(3):  # nothing new: one listing of nothing, however fresh the entries
        b.remote.sync(b)  # type: ignore[union-attr]
        assert requests.take() == {"stamps": 1} and requests.take_names() == 0

    # An entry that lands behind the newest one taken (a slow PUT, a clock behind) waits
    # for the next windowed listing.
    late = plant_points(a, template, 1, announced_at=time.time() - 120)
    b.remote.sync(b)  # type: ignore[union-attr]
    assert b.catalog.point(late[0]) is None
    nodes.monkeypatch.setenv("CAIRN_CLOUD_FEED_RESCAN_SECONDS", "0")
    b.remote.sync(b)  # type: ignore[union-attr]
    assert b.catalog.point(late[0]) is not None
    a.close()
    b.close()


def test_a_node_learns_points_by_their_records_and_reads_block_maps_on_demand(
        nodes: Nodes) -> None:
    a, b = nodes.open("a"), nodes.open("b")
    ranged: list[str] = []
    real_range = a.remote.backend.get_range  # type: ignore[union-attr]
    a.remote.backend.get_range = (  # type: ignore[union-attr]
        lambda name, start, end: ranged.append(name) or real_range(name, start, end))
    replicate(nodes.local, a)
    assert ranged == []  # the writer counts its runs from its own block maps, held locally
    requests = Requests(b)
    b.remote.sync(b)  # type: ignore[union-attr]
    counts = requests.take()
    indexes = len(list(b.remote.backend.list("index")))  # type: ignore[union-attr]
    # the records and the packs' new indexes, no block-map node
    assert counts["get"] == len(nodes.points) + indexes, counts
    assert not any((b.path / "nodes").iterdir()) and not b.catalog.chunk_refs()
    for point, want in nodes.points:  # a restore reads the block map it walks
        learnt = b.catalog.point(point.id)
        assert learnt is not None
        assert restored_digest(b, learnt, nodes.work / "out.img") == want
    assert any((b.path / "nodes").iterdir())  # its block-map nodes, read then
    # stats count every volume, as on the node that sent them, and leave the cache as it was
    mine, theirs = repository_stats(a), repository_stats(b)
    assert (theirs.chunks, theirs.stored_bytes, theirs.by_volume) == \
        (mine.chunks, mine.stored_bytes, mine.by_volume)
    assert theirs.stored_bytes and not b.catalog.chunk_refs()
    # a delete there changes no count; verify (every volume counted for it) is clean
    delete_points(b, [b.catalog.point(nodes.points[0][0].id)])  # type: ignore[list-item]
    assert verify(b).ok and not b.catalog.chunk_refs()
    a.remote.sync(a)  # type: ignore[union-attr]
    assert verify(a).ok and a.catalog.point(nodes.points[0][0].id) is None
    a.close()
    b.close()


def _batches(repo: Repository) -> list[str]:
    return [n for n in feed_names(repo) if cloud_sync.parse_batch(n) is not None]


def _ids(repo: Repository) -> set[str]:
    return {p.id for p in repo.catalog.points()}


def test_a_sync_reads_many_new_points_from_one_batch_another_sync_wrote(nodes: Nodes) -> None:
    a = nodes.open("a")
    replicate(nodes.local, a)
    template = a.catalog.point(nodes.points[0][0].id)
    assert template is not None
    b, c, d, e = (nodes.open(n) for n in "bcde")  # each synced in full before
    planted = plant_points(a, template, 20)
    requests = Requests(b)
    b.remote.sync(b)  # type: ignore[union-attr]
    counts = requests.take()
    assert counts["get"] == 20 and counts["put"] == 1, counts  # one by one, then a batch
    [batch] = _batches(b)
    requests = Requests(c)
    c.remote.sync(c)  # type: ignore[union-attr]
    counts = requests.take()
    assert counts["get"] == 1 and "put" not in counts, counts  # the batch alone
    assert _ids(c) == _ids(b) >= set(planted)
    requests.take_names()
    c.remote.sync(c)  # type: ignore[union-attr]
    assert requests.take() == {"stamps": 1} and requests.take_names() == 0  # nothing new
    point = c.catalog.point(planted[3])
    assert point is not None  # a point learnt from a batch is a real one
    assert restored_digest(c, point, nodes.work / "out.img") == nodes.points[0][1]

    # A point deleted since the batch was written is not taken from it: its tombstone's
    # entry comes in the same listing, and its record (gone) is asked for itself.
    a.remote.sync(a)  # type: ignore[union-attr]
    doomed = a.catalog.point(planted[0])
    assert doomed is not None
    delete_points(a, [doomed])
    requests = Requests(d)
    d.remote.sync(d)  # type: ignore[union-attr]
    assert requests.take()["get"] == 2  # the batch, and the deleted record's GET
    assert _ids(d) == _ids(c) - {doomed.id}

    # A batch altered (here sealed with another key) is skipped: the records are read
    # one by one.
    cloud = e.remote
    assert isinstance(cloud, Cloud)
    cloud.backend.put(batch, cloud_batch.encode(Sealer(b"x" * 32), cloud.repository_id,
                                                batch, {}))
    requests = Requests(e)
    cloud.sync(e)
    counts = requests.take()
    assert counts["get"] == 1 + 20, counts  # 19 records, 1 gone
    assert _ids(e) == _ids(d)
    # A sync writes a batch only when the newest one it saw is older than BATCH_EVERY.
    now = time.time()
    assert not cloud_batch.due(e, cloud_batch.BATCH_MIN - 1, now)
    assert not cloud_batch.due(e, 20, cloud_feed.name_time(max(_batches(e))))
    assert cloud_batch.due(e, 20, now + cloud_batch.BATCH_EVERY + 1)
    for repo in (a, b, c, d, e):
        repo.close()


def _carried(repo: Repository, batch: str) -> set[str]:
    cloud = repo.remote
    assert isinstance(cloud, Cloud)
    raw = cloud.backend.get(batch, cloud_batch.BATCH_LIMIT)
    return set(cloud_batch.decode(cloud.sealer, cloud.repository_id, batch, raw))


def _round(a: Repository, b: Repository, template: RecoveryPoint) -> tuple[set[str], set[str]]:
    """``a`` publishes 8 points and ``b`` syncs, reads them one by one and writes a batch:
    the ids, and what that batch carries."""
    before = set(feed_names(a))
    ids = set(plant_points(a, template, 8))
    announced = {n for n in set(feed_names(a)) - before if cloud_sync.parse(n)}
    requests = Requests(b)
    b.remote.sync(b)  # type: ignore[union-attr]
    counts = requests.take()
    assert counts["get"] == 8 and counts["put"] == 1, counts  # one by one, then a batch
    carried = _carried(b, max(_batches(b)))
    assert announced <= carried
    return ids, carried


def test_each_batch_carries_only_what_the_one_before_did_not(nodes: Nodes) -> None:
    """A chain: each batch starts at the newest batch its writer saw (no overlap here), and
    a reader three batches behind learns every point from the three, one GET each; a long
    batch comes back once the newest one is older than LEVEL."""
    nodes.monkeypatch.setenv("CAIRN_CLOUD_BATCH_EVERY", "0")
    nodes.monkeypatch.setenv("CAIRN_CLOUD_BATCH_OVERLAP", "0")
    a = nodes.open("a")
    replicate(nodes.local, a)  # real packs: the first batch carries their indexes too
    template = a.catalog.point(nodes.points[0][0].id)
    assert template is not None
    b, d = nodes.open("b"), nodes.open("d")  # each synced in full before
    rounds, carried = [], []
    for _ in range(3):
        ids, batch = _round(a, b, template)
        rounds.append(ids)
        carried.append(batch)
    records = [{n for n in batch if not n.startswith("index/")} for batch in carried]
    assert [len(r) for r in records] == [8, 8, 8] and len(set().union(*records)) == 24
    assert not any(n.startswith("index/") for n in carried[1] | carried[2])
    requests = Requests(d)
    d.remote.sync(d)  # type: ignore[union-attr]
    counts = requests.take()
    assert counts["get"] == 3 and "put" not in counts, counts  # the three batches alone
    assert _ids(d) == _ids(b) >= set().union(*rounds)
    point = d.catalog.point(min(rounds[0]))
    assert point is not None
    assert restored_digest(d, point, nodes.work / "out.img") == nodes.points[0][1]

    # Once the newest long batch seen is older than LEVEL, the next batch is long again:
    # it carries the whole SPAN its writer holds.
    nodes.monkeypatch.setenv("CAIRN_CLOUD_BATCH_LEVEL", "0.001")
    _ids4, long = _round(a, b, template)
    long_records = {n for n in long if not n.startswith("index/")}
    assert set().union(*records) < long_records and len(long_records) == 32
    assert any(n.startswith("index/") for n in long) and len(_batches(b)) == 4

    # A sync that decided to write while another node's batch landed writes none: it
    # lists the feed's last BATCH_EVERY once more right before its PUT.
    plant_points(a, template, 8)
    nodes.monkeypatch.setenv("CAIRN_CLOUD_BATCH_MIN", str(1 << 30))
    d.remote.sync(d)  # type: ignore[union-attr]  # holds 8 records no batch carries
    nodes.monkeypatch.setenv("CAIRN_CLOUD_BATCH_EVERY", "600")
    cloud = d.remote
    assert isinstance(cloud, Cloud)
    requests.take()
    assert cloud_batch.write(cloud, d) is None
    assert requests.take() == {"stamps": 1} and len(_batches(d)) == 4
    for repo in (a, b, d):
        repo.close()


def test_a_batch_carries_the_new_pack_indexes_too(nodes: Nodes) -> None:
    a, b, c = nodes.open("a"), nodes.open("b"), nodes.open("c")
    replicate(nodes.local, a)  # real packs, each with its index
    template = a.catalog.point(nodes.points[0][0].id)
    assert template is not None
    plant_points(a, template, 3)
    indexes = len(list(a.remote.backend.list("index")))  # type: ignore[union-attr]
    requests = Requests(b)
    b.remote.sync(b)  # type: ignore[union-attr]
    counts = requests.take()
    assert indexes and counts["get"] == 5 + indexes and counts["put"] == 1, counts
    requests = Requests(c)
    c.remote.sync(c)  # type: ignore[union-attr]
    assert requests.take()["get"] == 1  # the batch: records and indexes
    assert c.remote.packs.pack_ids() == b.remote.packs.pack_ids()  # type: ignore[union-attr]
    for point, want in nodes.points:  # read through the indexes the batch carried
        learnt = c.catalog.point(point.id)
        assert learnt is not None
        assert restored_digest(c, learnt, nodes.work / "out.img") == want
    for repo in (a, b, c):
        repo.close()


def test_a_batch_never_written_or_torn_loses_no_point(nodes: Nodes) -> None:
    a = nodes.open("a")
    replicate(nodes.local, a)
    template = a.catalog.point(nodes.points[0][0].id)
    assert template is not None
    faults = Faults(fail_puts=re.compile(r"\.batch~"))
    b, c = nodes.open("b", faults), nodes.open("c")
    planted = plant_points(a, template, 12)
    b.remote.sync(b)  # type: ignore[union-attr]  # its batch refused (a writer killed first)
    assert faults.injected == {"error": 1} and not _batches(b) and set(planted) <= _ids(b)
    d = nodes.open("d")
    more = plant_points(a, template, 6)
    c.remote.sync(c)  # type: ignore[union-attr]  # reads one by one, writes a batch
    [batch] = _batches(c)
    raw = c.remote.backend.get(batch, cloud_batch.BATCH_LIMIT)  # type: ignore[union-attr]
    c.remote.backend.put(batch, raw[: len(raw) // 2])  # type: ignore[union-attr]
    requests = Requests(d)
    d.remote.sync(d)  # type: ignore[union-attr]  # the torn batch is skipped
    assert requests.take()["get"] == 1 + len(more)
    assert _ids(d) == _ids(c) == _ids(b) | set(more)
    for repo in (a, b, c, d):
        repo.close()


def _plant_machines(repo: Repository, point_ids: list[str]) -> list[str]:
    """One machine point record (machine ``m1``) per point, announced; their ids."""
    cloud = repo.remote
    assert isinstance(cloud, Cloud)
    ids = []
    for n, point_id in enumerate(point_ids):
        machine_point = os.urandom(8).hex()
        record = {"repository": cloud.repository_id, "id": machine_point, "machine": "m1",
                  "created": time.time() + n, "consistency": "crash", "note": "",
                  "volumes": [{"disk": "sda", "point": point_id, "volume": "web01-sda"}]}
        name = cloud_machines.record_name("m1", machine_point)
        cloud.backend.put(name, json.dumps(cloud.sealer.seal(record)).encode())
        cloud.announce("put", name)
        ids.append(machine_point)
    return ids


def test_a_batch_carries_marks_and_machine_point_records_too(nodes: Nodes) -> None:
    a = nodes.open("a")
    replicate(nodes.local, a)
    template = a.catalog.point(nodes.points[0][0].id)
    assert template is not None and isinstance(a.remote, Cloud)
    b, c, d = nodes.open("b"), nodes.open("c"), nodes.open("d")
    planted = plant_points(a, template, 10)
    until = round(time.time()) + 86400.0
    for point_id in planted:  # a writes no batch: it does not sync
        point = RecoveryPoint(**{**template.__dict__, "id": point_id})
        a.remote.publish_marks(point, marks.Marks(locked_until=until))
    machines = _plant_machines(a, planted)
    requests = Requests(b)
    b.remote.sync(b)  # type: ignore[union-attr]
    counts = requests.take()
    assert counts["get"] == 30 and counts["put"] == 1, counts  # one by one, then a batch

    # One machine point deleted since the batch: its record is asked for itself (gone).
    cloud_machines.unpublish(a, [(machines[0], "m1")])
    requests = Requests(c)
    c.remote.sync(c)  # type: ignore[union-attr]
    counts = requests.take()
    assert counts["get"] == 2, counts  # the batch, and the deleted record's GET
    learnt = marks.all_marks(c)
    assert {i: learnt[i].locked_until for i in planted} == dict.fromkeys(planted, until)
    there = MachinePoints(c.catalog)
    assert there.get(machines[0]) is None
    for machine_point, point_id in zip(machines[1:], planted[1:], strict=True):
        found = there.get(machine_point)
        assert found is not None and [m.point.id for m in found.members] == [point_id]

    # A batch's copy of a record bound to another name is not taken: that record is read.
    [batch] = _batches(c)
    carried = cloud_batch.decode(a.remote.sealer, a.remote.repository_id, batch,
                                 a.remote.backend.get(batch, cloud_batch.BATCH_LIMIT))
    swapped = dict(carried)
    marks_entries = sorted(e for e in carried if "~marks~" in e)
    swapped[marks_entries[0]] = carried[marks_entries[1]]
    a.remote.backend.put(batch, cloud_batch.encode(a.remote.sealer, a.remote.repository_id,
                                                   batch, swapped))
    requests = Requests(d)
    d.remote.sync(d)  # type: ignore[union-attr]
    assert requests.take()["get"] == 3  # the batch, the deleted record, the swapped one
    learnt = marks.all_marks(d)
    assert {i: learnt[i].locked_until for i in planted} == dict.fromkeys(planted, until)
    assert {mp.id for mp in MachinePoints(d.catalog).list()} == set(machines[1:])
    for repo in (a, b, c, d):
        repo.close()


def test_a_writer_takes_the_indexes_of_packs_not_yet_published_from_a_batch(
        nodes: Nodes) -> None:
    a = nodes.open("a")
    replicate(nodes.local, a)
    template = a.catalog.point(nodes.points[0][0].id)
    assert template is not None and a.remote.packs is not None
    b, c = nodes.open("b"), nodes.open("c")
    plant_points(a, template, 6)
    nodes.monkeypatch.setenv("CAIRN_CLOUD_BATCH_MIN", "100")
    b.remote.sync(b)  # type: ignore[union-attr]  # learns those points, writes no batch
    nodes.monkeypatch.delenv("CAIRN_CLOUD_BATCH_MIN")
    # A writer's packs whose point is not published yet: no record will bring them.
    unpublished = [a.remote.packs.write_pack([(os.urandom(32), os.urandom(2000))])
                   for _ in range(5)]
    c.remote.sync(c)  # type: ignore[union-attr]  # reads them one by one, then a batch
    assert len(_batches(c)) == 1
    requests = Requests(b)
    b.remote.sync(b)  # type: ignore[union-attr]  # lists the batch; no record is new
    assert b.remote.packs.refresh() == len(unpublished)  # type: ignore[union-attr]
    counts = requests.take()
    assert counts["get"] == 1, counts  # the batch, not an index each
    assert set(unpublished) <= set(b.remote.packs.pack_ids())  # type: ignore[union-attr]
    for repo in (a, b, c):
        repo.close()


def test_an_old_cache_drops_the_counts_of_volumes_it_does_not_write(nodes: Nodes) -> None:
    a = nodes.open("a")
    replicate(nodes.local, a)
    b = nodes.open("b")
    for repo in (a, b):  # caches made before: every volume counted, no format
        cloud_counts.settle(repo)
        with repo.catalog.transaction() as db:
            db.execute("DROP TABLE cloud_counts_format")
        assert repo.catalog.chunk_refs()
        repo.close()
    a, b = nodes.open("a"), nodes.open("b")
    volumes = {v.id for v in b.catalog.volumes()}
    for repo in (a, b):
        assert not repo.catalog.chunk_refs() and cloud_counts.uncounted(repo) == volumes
    mine, theirs = repository_stats(a), repository_stats(b)
    assert (theirs.chunks, theirs.stored_bytes) == (mine.chunks, mine.stored_bytes)
    assert verify(b).ok
    # the writer counts its volume again at its next replication
    backup(nodes.local, "web01-sda", nodes.work / "disk.img")
    replicate(nodes.local, a)
    assert cloud_counts.uncounted(a) == set() and a.catalog.chunk_refs() and verify(a).ok
    a.close()
    b.close()
    b = nodes.open("b")
    assert cloud_counts.migrate(b) is False and cloud_counts.uncounted(b) == volumes
    b.close()


def test_a_cache_keeps_marks_taken_before_their_point_and_drops_those_of_points_gone(
        nodes: Nodes) -> None:
    a = nodes.open("a")
    replicate(nodes.local, a)
    template = a.catalog.point(nodes.points[0][0].id)
    assert template is not None and isinstance(a.remote, Cloud)
    b = nodes.open("b")
    # A point whose record has no feed entry yet (its writer died before writing it) and
    # whose marks have one: b takes the marks before it knows the point.
    [early] = plant_points(a, template, 1, announce=False)
    point = RecoveryPoint(**{**template.__dict__, "id": early})
    until = round(time.time()) + 86400.0
    a.remote.publish_marks(point, marks.Marks(locked_until=until))
    b.remote.sync(b)  # type: ignore[union-attr]
    assert b.catalog.point(early) is None and marks.orphans(b) == {early}

    # As a cache of an older cairn holds them: no trigger, and the marks of a point that
    # went. Making the trigger drops neither here (the full sync decides).
    with b.catalog.transaction() as db:
        db.execute("DROP TRIGGER point_marks_gone")
        db.execute("INSERT INTO point_marks(point_id, flags) VALUES('0123456789ab', '[]')")
    assert marks.orphans(b) == {early, "0123456789ab"}

    a.remote.announce("put", point_object(point))
    b.remote.sync(b)  # type: ignore[union-attr]  # the record, and no marks entry
    assert b.catalog.point(early) is not None
    assert marks.marks_of(b, early).locked_until == until
    assert b.remote.sync(b, full=True)  # type: ignore[union-attr]
    assert marks.orphans(b) == set() and marks.marks_of(b, early).locked_until == until
    a.close()
    b.close()
