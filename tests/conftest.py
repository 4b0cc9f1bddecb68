"""Fixtures for every test folder. Keep each one small and its helper in its own module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3server import SeaweedS3


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 endpoint for the session (about 3 s to start), stopped at the end.

    Tests share its bucket ``s3_server.bucket``: give each test its own key prefix, or its own
    bucket with ``s3_server.make_bucket(name)``.
    """
    with SeaweedS3.start() as server:
        yield server
