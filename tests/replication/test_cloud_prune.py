"""The cloud prune over packs, and the conversion of a legacy repository, on real SeaweedFS.

Every test ends the same way: each point the bucket still publishes restores byte for byte
and `verify --read-data` finds nothing wrong, read by a node with an empty cache. The grace
period is shrunk to seconds (``CAIRN_CLOUD_LOCK_SECONDS``) and packs to a few chunks
(``CAIRN_CLOUD_PACK_BYTES``), so a prune has something to condemn, repack and delete.
`cairn cloud prune --json` and `cairn cloud convert --json` are run as a user runs them.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cairn.ops.points import delete
from cairn.replication.replicate import replicate
from cairn.store.chunks import chunk_name
from cairn.store.cloud import init_cloud, open_cloud
from cairn.store.cloud_counts import view
from cairn.store.repository import Repository
from cairn.store.stats import repository_stats
from cairn.store.verify import verify
from tests.appliance.harness import wait_for
from tests.cli.test_cli import ROOT, one_line_error
from tests.replication.test_replicate import Cli
from tests.s3server import SECRET_KEY, SeaweedS3
from tests.store.helpers import backup, digest, make_image, mutate, restored_digest

GRACE = 2.0
PACK = 256 * 1024


@dataclass
class Site:
    url: str
    server: SeaweedS3
    local: Repository
    points: dict[str, str]
    """point id -> sha256 of its image"""
    image: Path
    data: bytearray
    work: Path
    cli: Cli
    unsized: dict[str, int] = field(default_factory=dict)
    """node -> how many chunks' sizes before compression it did not learn (`whole`)"""

    def backup(self, seed: int) -> None:
        mutate(self.image, self.data, seed=seed, writes=5)
        self.points[backup(self.local, "web01-sda", self.image).id] = digest(self.data)

    def objects(self, prefix: str = "") -> dict[str, int]:
        """Every object of the repository under ``prefix``, with its size (but the prune's
        clock and the test's own)."""
        s3 = self.server.client()
        base = self.url.removeprefix(f"s3://{self.server.bucket}/") + "/"
        found: dict[str, int] = {}
        for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.server.bucket, Prefix=base + prefix):
            found.update((o["Key"][len(base):], o["Size"]) for o in page.get("Contents", []))
        return {n: s for n, s in found.items() if n not in ("prune.time", "test-clock")
                and not n.startswith("locks/")}

    def ids(self, prefix: str) -> set[str]:
        return {name.rpartition("/")[2] for name in self.objects(prefix)}

    def age(self) -> None:
        """Until everything now in the bucket is older than the grace by the server's
        clock (which a prune judges ages by; it counts whole seconds)."""
        s3 = self.server.client()
        key = self.url.removeprefix(f"s3://{self.server.bucket}/") + "/test-clock"

        def stamp() -> Any:
            s3.put_object(Bucket=self.server.bucket, Key=key, Body=b"")
            return s3.head_object(Bucket=self.server.bucket, Key=key)["LastModified"]

        start = stamp()
        wait_for(lambda: (stamp() - start).total_seconds() > GRACE + 1, GRACE * 10, 0.25)

    def prune(self, *more: str) -> dict[str, Any]:
        report = self.cli.json("cloud", "prune", self.url, *more)
        assert isinstance(report, dict)
        return report

    def whole(self, node: str) -> None:
        """A node with an empty cache finds every point the bucket publishes whole."""
        with pytest.MonkeyPatch.context() as env:
            env.setenv("CAIRN_CACHE", str(self.work / node))
            with open_cloud(self.url, None) as cloud:
                listed = cloud.catalog.points()
                assert listed
                for point in listed:
                    got = restored_digest(cloud, point, self.work / "out.img")
                    assert got == self.points[point.id], point.id
                assert verify(cloud, read_data=True).ok
                self.unsized[node] = repository_stats(cloud).unsized_chunks


@pytest.fixture
def site(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
         ) -> Iterator[Site]:
    """A local repository of three points, replicated into a new cloud repository."""
    for name, value in {**s3_server.cairn_env(tmp_path), "CAIRN_CLOUD_LOCK_SECONDS": str(GRACE),
                        "CAIRN_CLOUD_PACK_BYTES": str(PACK)}.items():
        monkeypatch.setenv(name, value)
    url = f"s3://{s3_server.bucket}/prune-{uuid.uuid4().hex[:10]}"
    image = tmp_path / "disk.img"
    data = make_image(image, 2 * 1024 * 1024, seed=7, fill=0.6)
    with Repository.init(tmp_path / "local") as local:
        site = Site(url, s3_server, local, {}, image, data, tmp_path,
                    Cli(s3_server, tmp_path / "cache"))
        site.cli.env.update(CAIRN_CLOUD_LOCK_SECONDS=str(GRACE),
                            CAIRN_CLOUD_PACK_BYTES=str(PACK))
        for seed in range(3):
            site.backup(seed)
        with init_cloud(url, None) as cloud:
            replicate(local, cloud)
        yield site


def test_prune_condemns_then_deletes_dead_packs_and_repacks_sparse_ones(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.age()
    assert site.prune()["packs_condemned"] == []  # every pack holds a chunk a point needs
    packs = site.objects("packs/")
    doomed = list(site.points)[:2]

    # Deleting points runs a prune: packs only they needed are condemned, and those mostly
    # dead are repacked into new packs, then condemned. Nothing is deleted yet.
    monkeypatch.setenv("CAIRN_CLOUD_REPACK_SHARE", "0.05")
    with open_cloud(site.url, None) as cloud:
        delete(cloud, doomed, now=True)
    condemned = site.ids("condemned/")
    assert condemned and condemned <= {n.rpartition("/")[2] for n in packs}
    assert site.objects("packs/").keys() - packs.keys(), "nothing was repacked"
    for point in doomed:
        del site.points[point]
    site.whole("before")

    site.age()
    state = site.objects()
    dry = site.prune("--dry-run")
    assert sorted(dry["packs_deleted"]) == sorted(condemned) and site.objects() == state
    done = site.prune()
    assert sorted(done["packs_deleted"]) == sorted(condemned)
    assert done["bytes_freed"] == sum(size for name, size in packs.items()
                                      if name.rpartition("/")[2] in condemned)
    assert done["condemnations_lifted"] == [] and done["packs_condemned"] == []
    left = site.objects()
    for pack in condemned:
        assert {f"packs/{pack[-2:]}/{pack}", f"index/{pack}", f"condemned/{pack}"}.isdisjoint(
            left)
    assert sum(site.objects("packs/").values()) < sum(packs.values())
    site.whole("after")
    assert site.unsized["after"] == 0  # the repacked packs' indexes carry them too
    site.whole("before")  # a node that knew the deleted packs reads the chunks' new copies


def test_a_point_that_needs_a_condemned_pack_lifts_its_condemnation(site: Site) -> None:
    """A writer that published a point reusing chunks of a pack condemned after it planned:
    the next prune lifts the condemnation instead of deleting the pack."""
    site.age()
    packs = site.ids("packs/")
    for pack in packs:  # as if a prune found them dead before the points were published
        site.server.client().put_object(
            Bucket=site.server.bucket,
            Key=f"{site.url.removeprefix(f's3://{site.server.bucket}/')}/condemned/{pack}",
            Body=b"")
    site.age()
    done = site.prune()
    assert sorted(done["condemnations_lifted"]) == sorted(packs)
    assert done["packs_deleted"] == [] and site.ids("packs/") == packs
    assert not site.ids("condemned/")
    site.whole("after")


def test_convert_moves_legacy_chunk_objects_into_packs_resumably(site: Site) -> None:
    _make_legacy(site)
    legacy = site.objects("chunks/")
    assert legacy and not site.objects("packs/")
    site.whole("legacy")

    # One chunk per pack: many steps, so the kill lands midway.
    env = {**site.cli.env, "CAIRN_CLOUD_PACK_BYTES": "1"}
    with subprocess.Popen([sys.executable, "-m", "cairn", "cloud", "convert", site.url],
                          cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as convert:
        try:
            wait_for(lambda: len(site.objects("index/")) >= 2 or convert.poll() is not None,
                     timeout=60)
        finally:
            convert.send_signal(signal.SIGKILL)
    assert site.objects("chunks/"), "the kill came too late to test"
    site.whole("half-converted")

    done = site.cli.json("cloud", "convert", site.url)
    assert isinstance(done, dict) and done["damaged"] == [] and done["packs_written"]
    assert done["objects_deleted"] <= len(legacy) and not site.objects("chunks/")
    again = site.cli.json("cloud", "convert", site.url)
    assert isinstance(again, dict)
    assert (again["chunks_packed"], again["objects_deleted"], again["packs_written"]) == (
        0, 0, [])
    site.whole("converted")
    assert site.unsized["legacy"] > 0 and site.unsized["converted"] == 0


def _make_legacy(site: Site) -> None:
    """Turn the packed repository into one a cairn before packs wrote: each chunk its own
    object, no pack and no index (the bytes stored are the same either way)."""
    with open_cloud(site.url, None) as cloud:
        bucket = cloud.remote.backend  # type: ignore[union-attr]
        with view(cloud):  # every volume counted, though this cache may not write it
            every = list(cloud.catalog.chunk_refs())
        for digest_ in every:
            bucket.put(chunk_name(digest_), cloud.chunks.backend.get(chunk_name(digest_)))
        for prefix in ("packs", "index"):
            bucket.delete_many(list(bucket.list(prefix)))
        shutil.rmtree(cloud.path)


def test_prune_refuses_what_it_cannot_do_and_deletes_nothing(
        site: Site, s3_server: SeaweedS3) -> None:
    with open_cloud(site.url, None) as cloud:
        delete(cloud, [next(iter(site.points))], now=True)
    before = site.objects()
    for access, refused in (("cairn-test-no-list", "AccessDenied to LIST"),
                            ("cairn-test-read-only", "AccessDenied to PUT")):
        limited = Cli(s3_server, site.work / "cache")
        limited.env.update(CAIRN_S3_ACCESS_KEY=access, CAIRN_S3_SECRET_KEY=SECRET_KEY)
        result = limited.run("cloud", "prune", site.url)
        one_line_error(result, 1, refused, s3_server.bucket)
        assert site.objects() == before

    # A pack cut short, then gone: the prune names it and its index, and stops.
    s3 = s3_server.client()
    victim, size = max(site.objects("packs/").items(), key=lambda item: item[1])
    key = f"{site.url.removeprefix(f's3://{s3_server.bucket}/')}/{victim}"
    body = s3.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=s3_server.bucket, Key=key, Body=body[: size // 2])
    for _damage in ("truncated", "missing"):
        before = site.objects()
        result = site.cli.run("cloud", "prune", site.url)
        one_line_error(result, 1, victim, f"index/{victim.rpartition('/')[2]}",
                       "nothing was pruned")
        assert site.objects() == before
        s3.delete_object(Bucket=s3_server.bucket, Key=key)


def test_prune_beside_a_replication_deletes_nothing_a_point_needs(site: Site) -> None:
    """A replication (a real process) sends new points while the cloud's oldest points are
    deleted and prunes (real processes too) run again and again, the grace period passing
    several times over: every point left restores, on a node that knew nothing."""
    for seed in range(10, 14):
        site.backup(seed)
    with subprocess.Popen([sys.executable, "-m", "cairn", "replicate", "--repo",
                           str(site.local.path), "--to", site.url, "--bandwidth", "200K"],
                          cwd=ROOT, env=site.cli.env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as replication:
        deadline = time.monotonic() + 120
        rounds, deleted = 0, []
        while replication.poll() is None and time.monotonic() < deadline:
            with open_cloud(site.url, None) as cloud:
                listed = cloud.catalog.points()
                if len(listed) > 2:
                    delete(cloud, [listed[0].id], now=True)
                    del site.points[listed[0].id]
            deleted += site.prune()["packs_deleted"]
            rounds += 1
        _out, err = replication.communicate(timeout=30)
        assert replication.returncode == 0, err
    assert rounds >= 2
    for _ in range(2):
        site.age()
        deleted += site.prune()["packs_deleted"]
    assert deleted and not set(deleted) & site.ids("packs/")
    site.whole("after")


def test_a_writer_sends_again_what_only_condemned_packs_hold(site: Site) -> None:
    """Chunks only condemned packs hold count as absent: a point whose blocks went back to
    a deleted point's contents sends them again, so the condemned packs still go."""
    site.age()
    first = next(iter(site.points))
    with open_cloud(site.url, None) as cloud:
        delete(cloud, list(site.points)[:2], now=True)
    condemned = site.ids("condemned/")
    assert condemned
    back = site.work / "back.img"
    restored_digest(site.local, site.local.catalog.point(first), back)
    point = backup(site.local, "web01-sda", back)
    site.points[point.id] = digest(bytearray(back.read_bytes()))
    with open_cloud(site.url, None) as cloud:
        report = replicate(site.local, cloud)
    assert report.points == [point.id] and report.bytes_sent > 0
    site.age()
    done = site.prune()
    assert done["condemnations_lifted"] == []
    assert sorted(done["packs_deleted"]) == sorted(condemned)
    site.whole("after")
