"""Bad input to an agentless backup: a clear error, the VM undisturbed, nothing left behind."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn.errors import SourceError
from cairn.ops.vm_backup import VmBackupRequest, backup_vm
from cairn.store.repository import Repository
from tests.sources.live_vm import MIB, LiveVm


@pytest.fixture
def unix_server(tmp_path: Path) -> Iterator[Callable[[bytes], Path]]:
    """``serve(greeting)``: a unix socket that accepts, sends ``greeting`` and then says
    nothing more (an empty greeting: never a word)."""
    stop = threading.Event()
    socks: list[socket.socket] = []

    def serve(greeting: bytes) -> Path:
        path = tmp_path / f"other{len(socks)}.sock"
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        server.listen()
        socks.append(server)

        def answer() -> None:
            conn, _ = server.accept()
            socks.append(conn)
            conn.sendall(greeting)
            stop.wait()

        threading.Thread(target=answer, daemon=True).start()
        return path

    try:
        yield serve
    finally:
        stop.set()
        for s in socks:
            s.close()


def test_missing_socket(repo: Repository, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"no QEMU monitor socket at .*-qmp unix:"):
        backup_vm(repo, VmBackupRequest(tmp_path / "nothing.sock"))


def test_socket_that_never_answers(repo: Repository,
                                   unix_server: Callable[[bytes], Path]) -> None:
    with pytest.raises(SourceError, match="did not answer as a QEMU monitor"):
        backup_vm(repo, VmBackupRequest(unix_server(b"")))


def test_socket_that_is_not_qmp(repo: Repository, unix_server: Callable[[bytes], Path]) -> None:
    with pytest.raises(SourceError, match="is not a QEMU monitor"):
        backup_vm(repo, VmBackupRequest(unix_server(b"SSH-2.0-OpenSSH_9.2\r\n")))


def test_vm_without_disks(start_vm: Callable[..., LiveVm], repo: Repository) -> None:
    vm = start_vm({})
    with pytest.raises(SourceError, match="no writable disk"):
        backup_vm(repo, VmBackupRequest(vm.qmp))
    assert vm.leftovers() == []
    assert repo.catalog.points() == []


def test_bitmap_in_use_by_another_tool(start_vm: Callable[..., LiveVm], repo: Repository,
                                       tmp_path: Path) -> None:
    vm = start_vm({"vda": 8 * MIB})
    vm.monitor.execute("block-dirty-bitmap-add", {"node": "n-vda", "name": "cairn-other"})
    vm.monitor.execute("block-dirty-bitmap-disable", {"node": "n-vda", "name": "cairn-other"})
    vm.monitor.execute("nbd-server-start", {"addr": {"type": "unix", "data": {
        "path": str(tmp_path / "other-nbd.sock")}}})
    vm.monitor.execute("block-export-add", {"type": "nbd", "id": "other", "node-name": "n-vda",
                                            "bitmaps": ["cairn-other"]})
    with pytest.raises(SourceError, match="cairn-other on disk vda is in use by another"):
        backup_vm(repo, VmBackupRequest(vm.qmp))
    assert vm.bitmaps() == {"vda": ["cairn-other"]}
    assert vm.leftovers() == ["other"]
    assert repo.catalog.points() == []


def test_nbd_server_held_by_another_tool(start_vm: Callable[..., LiveVm], repo: Repository,
                                         tmp_path: Path) -> None:
    vm = start_vm({"vda": 8 * MIB})
    vm.write("vda", 0, MIB, 0x31)
    first = backup_vm(repo, VmBackupRequest(vm.qmp))
    vm.monitor.execute("nbd-server-start", {"addr": {"type": "unix", "data": {
        "path": str(tmp_path / "other-nbd.sock")}}})
    with pytest.raises(SourceError, match="cannot start its NBD server"):
        backup_vm(repo, VmBackupRequest(vm.qmp))
    assert vm.bitmaps() == {"vda": [f"cairn-{first.machine_point.id}"]}
    assert vm.leftovers() == []
    vm.monitor.execute("nbd-server-stop")
    again = backup_vm(repo, VmBackupRequest(vm.qmp))
    assert again.disks[0].mode == "incremental"


def test_disk_held_by_another_block_job(start_vm: Callable[..., LiveVm], repo: Repository,
                                        tmp_path: Path) -> None:
    vm = start_vm({"vda": 8 * MIB, "vdb": 4 * MIB})
    vm.write("vdb", 0, MIB, 0x51)
    first = backup_vm(repo, VmBackupRequest(vm.qmp))
    vm.monitor.execute("drive-mirror", {"job-id": "other-mirror", "device": "n-vdb",
                                        "target": str(tmp_path / "mirror.qcow2"),
                                        "format": "qcow2", "sync": "full"})
    with pytest.raises(SourceError, match="cannot take a point-in-time view"):
        backup_vm(repo, VmBackupRequest(vm.qmp))
    assert vm.bitmaps() == {d: [f"cairn-{first.machine_point.id}"] for d in vm.disks}
    assert vm.leftovers() == ["other-mirror"]
    vm.monitor.execute("block-job-cancel", {"device": "other-mirror", "force": True})
    vm.monitor.wait_event("BLOCK_JOB_CANCELLED", lambda e: e["device"] == "other-mirror", 30)
    assert backup_vm(repo, VmBackupRequest(vm.qmp)).disks[1].mode == "incremental"
