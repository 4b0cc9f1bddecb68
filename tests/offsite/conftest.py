"""An appliance that reaches the test S3 server, with its own cache and key folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.appliance.harness import Agent, Appliance
from tests.s3server import SeaweedS3


def s3_env(server: SeaweedS3, work: Path) -> dict[str, str]:
    return server.cairn_env(work)


@pytest.fixture
def cloud_appliance(tmp_path: Path, s3_server: SeaweedS3) -> Iterator[Appliance]:
    app = Appliance(tmp_path, alerts={"tick_seconds": 0.2},
                    env=s3_env(s3_server, tmp_path))
    try:
        app.start()
        yield app
    finally:
        app.stop()


@pytest.fixture
def cloud_url(s3_server: SeaweedS3, request: pytest.FixtureRequest) -> str:
    name = "o" + str(abs(hash(request.node.name)) % 10**8)
    return f"s3://{s3_server.bucket}/{name}"


@pytest.fixture
def web01(cloud_appliance: Appliance, tmp_path: Path) -> Agent:
    """An agent of the cloud appliance protecting one small disk, not yet backed up."""
    agent = Agent(cloud_appliance, "web01")
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(range(256)) * 4096)
    agent.protect("sda", disk)
    return agent
