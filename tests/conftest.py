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


# The test modules that boot QEMU guests. `make test` runs the suite on two pytest-xdist
# workers; these modules form one unit of work, so that one worker boots guests, one at a
# time, as the boot timeouts assume, while the other worker runs everything else.
QEMU_MODULES = frozenset({
    "tests/appliance/test_agentless.py", "tests/offsite/test_recovery.py",
    "tests/sources/test_guest_agent.py", "tests/sources/test_machine_points_cli.py",
    "tests/sources/test_qemu_backup.py", "tests/virt/test_boot_points.py",
    "tests/virt/test_diskless.py", "tests/virt/test_scheduled_verification.py",
    "tests/virt/test_screenshot.py", "tests/virt/test_virtualize.py", "tests/virt/test_vms.py",
    "tests/web/test_browser.py",
})


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """Hand out whole modules (their fixtures are set up once), the QEMU modules as one.

    xdist's own ``loadgroup`` cannot do this under pytest 9: it renames items by their
    ``_nodeid``, which pytest 9 no longer reads."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "qemu" if module in QEMU_MODULES else module

    return ModuleScheduling(config, log)


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
