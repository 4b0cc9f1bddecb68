"""Which points a replication sends: never one the cloud held, first of each hour or day,
none started after the window closes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cairn.errors import UsageError
from cairn.replication.replicate import Pace, replicate
from cairn.replication.selection import Known, choose
from cairn.store.catalog import RecoveryPoint
from cairn.store.cloud import init_cloud
from cairn.store.repository import Repository
from tests.s3server import SeaweedS3
from tests.store.helpers import backup, make_image, mutate

DAY0 = time.mktime((2026, 3, 2, 0, 0, 0, 0, 0, -1))  # local midnight


def point(n: int, hours: float, volume: str = "web01.sda") -> RecoveryPoint:
    return RecoveryPoint(id=f"p{n}", volume=volume, volume_id=1, seq=n,
                         created=DAY0 + hours * 3600, size=1, root=b"", allocated=0,
                         bytes_read=0, bytes_stored=0, seconds=0.0, source="")


def test_every_point_but_those_the_cloud_holds_or_removed() -> None:
    local = [point(n, n) for n in range(5)]
    known = [Known("p1", "web01.sda", local[1].created), Known("p3", "web01.sda", 0)]
    assert [p.id for p in choose(local, known)] == ["p0", "p2", "p4"]


def test_first_of_each_hour_and_day_and_a_period_sent_once_stays_done() -> None:
    # two points an hour for three days, and a second volume
    local = [point(n, n / 2) for n in range(144)] + [point(900, 0.2, "db01.sda")]
    hourly = choose(local, [], "hourly")
    assert len(hourly) == 72 + 1 and all(p.seq % 2 == 0 for p in hourly[:72])
    daily = choose(local, [], "daily")
    assert [p.id for p in daily] == ["p900", "p0", "p48", "p96"]
    # Day 1's first point went and was removed by the cloud's retention; local retention
    # then deleted it too: the day's next point must not go in its place.
    removed_first = [Known("p0", "web01.sda", local[0].created)]
    later = [p for p in local if p.id != "p0"]
    assert [p.id for p in choose(later, removed_first, "daily")] == ["p900", "p48", "p96"]


def test_a_machine_point_across_an_hour_is_sent_whole() -> None:
    # backup A's disks committed at 0:59:58 and 1:00:03, backup B's at 1:05 and 1:06
    a_sda, a_sdb = point(1, 1 - 2 / 3600), point(2, 1 + 3 / 3600, "web01.sdb")
    b_sda, b_sdb = point(3, 1 + 5 / 60), point(4, 1 + 6 / 60, "web01.sdb")
    local = [a_sda, a_sdb, b_sda, b_sdb]
    # by their own times A's sdb is hour 1's first, so only half of B would go
    assert {p.id for p in choose(local, [], "hourly")} == {"p1", "p2", "p3"}
    moments = {"p1": DAY0 + 3540, "p2": DAY0 + 3540, "p3": DAY0 + 3900, "p4": DAY0 + 3900}
    assert {p.id for p in choose(local, [], "hourly", moments)} == {"p1", "p2", "p3", "p4"}
    sent_a = [Known("p1", "web01.sda", a_sda.created), Known("p2", "web01.sdb", a_sdb.created)]
    assert [p.id for p in choose(local, sent_a, "hourly", moments)] == ["p3", "p4"]


def test_unknown_send_is_refused() -> None:
    with pytest.raises(UsageError, match="--send 'weekly'"):
        choose([point(0, 0)], [], "weekly")


def test_a_closed_window_leaves_the_rest_for_later(s3_server: SeaweedS3, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_KEYS", str(tmp_path / "keys"))
    monkeypatch.setenv("CAIRN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CAIRN_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("CAIRN_S3_SECRET_KEY", s3_server.secret_key)
    local = Repository.init(tmp_path / "local")
    image = tmp_path / "disk.img"
    data = make_image(image, 1 << 20, seed=5)
    for seed in (6, 7):
        backup(local, "web01.sda", image)
        mutate(image, data, seed=seed)
    url = f"s3://{s3_server.bucket}/window-{os.urandom(3).hex()}"
    cloud = init_cloud(url, s3_server.endpoint)
    try:
        closed = replicate(local, cloud, pace=Pace(until=time.time() - 1))
        assert closed.points == [] and closed.left_for_later == 2 and closed.bytes_sent == 0
        opened = replicate(local, cloud, pace=Pace(until=time.time() + 3600))
        assert len(opened.points) == 2 and opened.left_for_later == 0
    finally:
        cloud.close()
        local.close()
