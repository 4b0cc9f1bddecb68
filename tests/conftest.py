"""Fixtures for every test folder. Keep each one small and its helper in its own module."""

from __future__ import annotations

import os
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


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test is a test that did not run: a tool missing on this machine would
    otherwise leave CI green having proved nothing. `scripts/setup.sh` installs every tool;
    ``CAIRN_ALLOW_SKIPS=1`` accepts skips on a machine that cannot have them."""
    if not _SKIPPED or os.environ.get("CAIRN_ALLOW_SKIPS") == "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"{len(_SKIPPED)} test(s) skipped, which fails the run "
                            "(install what they need with scripts/setup.sh, or set "
                            "CAIRN_ALLOW_SKIPS=1):", red=True)
        for line in _SKIPPED[:20]:
            reporter.write_line(f"  {line}")
    if exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
