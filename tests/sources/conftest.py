"""Running VMs to back up, always stopped after the test, and a repository beside them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn.store.repository import Repository
from tests.sources.live_vm import LiveVm


@pytest.fixture
def start_vm(tmp_path: Path) -> Iterator[Callable[..., LiveVm]]:
    """``start_vm({"vda": size, ...}, fmt="qcow2")``: a running VM; all are stopped at the end."""
    vms: list[LiveVm] = []

    def start(disks: dict[str, int], fmt: str = "qcow2", name: str = "vm1") -> LiveVm:
        folder = tmp_path / f"vm{len(vms)}"
        folder.mkdir()
        vm = LiveVm(folder, disks, fmt, name)
        vm.create_images()
        vms.append(vm)
        return vm.start()

    try:
        yield start
    finally:
        for vm in vms:
            vm.stop(kill=True)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    repository = Repository.init(tmp_path / "repo")
    try:
        yield repository
    finally:
        repository.close()
