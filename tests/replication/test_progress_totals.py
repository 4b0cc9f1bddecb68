"""Long jobs tell their progress bar the total before they finish it (issue 15: replicate
showed `70,242,573/0 bytes`, `verify --point` had no total): what they expect equals what
they then do, so the bar's ETA is true."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cairn.replication.replicate import replicate
from cairn.store.cloud import init_cloud
from cairn.store.repository import Repository
from cairn.store.verify import verify
from tests.s3server import SeaweedS3
from tests.store.helpers import backup, make_image, mutate


class Recorder:
    """A `cairn.meter.Meter` that keeps what it was told."""

    def __init__(self) -> None:
        self.expected = 0
        self.done = 0
        self.early = True   # every byte done was announced before it was done

    def __call__(self, done: int) -> None:
        self.done += done
        self.early &= self.done <= self.expected

    def expect(self, more: int) -> None:
        self.expected += more


def two_points(tmp_path: Path) -> Repository:
    local = Repository.init(tmp_path / "local")
    image = tmp_path / "disk.img"
    data = make_image(image, 1 << 20, seed=11)
    backup(local, "web01.sda", image)
    mutate(image, data, seed=12)
    backup(local, "web01.sda", image)
    return local


def test_verify_of_one_point_announces_what_it_reads(tmp_path: Path) -> None:
    with two_points(tmp_path) as repo:
        meter = Recorder()
        report = verify(repo, point=repo.catalog.points()[-1], read_data=True, progress=meter)
        assert report.ok and report.bytes_read > 0
        assert meter.expected == meter.done == report.bytes_read and meter.early


def test_replicate_announces_each_points_bytes_before_sending(
        s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_KEYS", str(tmp_path / "keys"))
    monkeypatch.setenv("CAIRN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CAIRN_S3_ACCESS_KEY", s3_server.access_key)
    monkeypatch.setenv("CAIRN_S3_SECRET_KEY", s3_server.secret_key)
    with two_points(tmp_path) as local:
        cloud = init_cloud(f"s3://{s3_server.bucket}/meter-{os.urandom(3).hex()}",
                           s3_server.endpoint)
        try:
            meter = Recorder()
            report = replicate(local, cloud, progress=meter)
        finally:
            cloud.close()
    assert len(report.points) == 2 and report.bytes_sent > 0
    assert meter.expected == meter.done == report.bytes_sent and meter.early
