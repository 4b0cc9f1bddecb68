"""Fixtures of the cloud tests: a repository URL of its own and `cairn` pointed at the server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.replication.test_replicate import Cli
from tests.s3server import SeaweedS3


@pytest.fixture
def cloud_url(s3_server: SeaweedS3, request: pytest.FixtureRequest) -> str:
    name = "r" + str(abs(hash(request.node.name)) % 10**8)
    return f"s3://{s3_server.bucket}/{name}"


@pytest.fixture
def cli(s3_server: SeaweedS3, tmp_path: Path) -> Iterator[Cli]:
    yield Cli(s3_server, tmp_path / "cache")
