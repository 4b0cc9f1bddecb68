"""The process that runs one managed VM: the clones' NBD exports and QEMU, nothing else.

The appliance starts one runner per VM in a session of its own (``python -m
cairn.virt.vm_runner FOLDER``), so the VM survives the request, the CLI and a restart of
the appliance itself; QEMU dies with its runner (the disks are served by it). Everything
the runner knows comes from ``FOLDER/spec.json``, and everything it reports goes to
``FOLDER/status.json``, replaced atomically: ``starting`` -> ``running`` -> ``stopping`` ->
``stopped`` (or ``failed`` with the reason).

The disks are served on unix sockets (mode 0600, in a private folder) under unguessable
export names: no other user and no network client can reach them. The VNC console listens
on loopback and asks for the password from the spec.

SIGTERM stops the VM cleanly: the ACPI power button, then, after the timeout found in
``FOLDER/stop.json`` (default `DEFAULT_STOP_TIMEOUT`), a forced stop; then the clones are
flushed, so what the guest wrote is durable before the status says ``stopped``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cairn import scratch
from cairn.store.clone_writers import Holder, writing
from cairn.store.clones import CloneVolume, get_clone
from cairn.store.profiles import is_cloud
from cairn.store.repository import Repository
from cairn.virt.devices import CloneDevice
from cairn.virt.nbd import NbdServer
from cairn.virt.qemu import (
    SCRATCH_PREFIX,
    DiskBus,
    Firmware,
    KvmCannotRun,
    VirtualMachine,
    with_tcg_fallback,
)

DEFAULT_STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class VmSpec:
    """What to run: written by the appliance, read by the runner."""

    name: str
    repo: str
    clones: list[str]
    point: str
    volume: str
    cpus: int
    memory_mib: int
    firmware: Firmware
    disk_bus: DiskBus
    networks: list[str]
    nics: list[str]
    vnc_password: str
    created: float = field(default_factory=time.time)
    machine: str = ""  # set when the disks are a machine point's
    disks: list[str] = field(default_factory=list)  # the machine's disk names, in order
    key_file: str = ""  # the key a cloud ``repo`` opens with ("" : this node's own for it)
    endpoint: str = ""  # where a cloud ``repo`` is read ("": this node's profile of it)

    def save(self, folder: Path) -> None:
        write_json(folder / "spec.json", asdict(self))

    @classmethod
    def load(cls, folder: Path) -> VmSpec:
        return cls(**json.loads((folder / "spec.json").read_text()))

    @property
    def cloud(self) -> bool:
        return is_cloud(self.repo)

    def open_repo(self) -> Repository:
        """Where the clones live: the appliance's repository, or the cloud repository the
        point came from (its clones are in this node's cache of it)."""
        return open_vm_repo(self.repo, Path(self.key_file) if self.key_file else None,
                            self.endpoint or None)


def open_vm_repo(location: str, key_file: Path | None, endpoint: str | None = None
                 ) -> Repository:
    """Open the repository a VM runs from. A cloud one is reached at ``endpoint``, else
    where this node's profile of it (or ``CAIRN_S3_ENDPOINT``) says, and its blocks are read
    on demand through the point reader's bounded cache, as `virtualize --repo s3://...`
    reads them."""
    if not is_cloud(location):
        return Repository.open(Path(location))
    from cairn.store.cloud import open_cloud

    return open_cloud(location, endpoint, key_file)


def write_json(path: Path, value: dict[str, Any]) -> None:
    """Replace ``path`` atomically, readable by its owner only (it may hold a password)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
    tmp.replace(path)


class Status:
    """The runner's side of ``status.json``: each `set` merges fields and rewrites it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "status.json"
        self.fields: dict[str, Any] = {"pid": os.getpid(), "state": "starting"}
        self.set()

    def set(self, **fields: Any) -> None:
        self.fields.update(fields)
        write_json(self.path, self.fields)


@contextlib.contextmanager
def exported_disk(repo: Repository, clone_name: str, sockets: Path, index: int, vm: str
                  ) -> Iterator[str]:
    """Serve one clone, written by VM ``vm`` alone (`cairn.store.clone_writers`), on a
    private unix socket; yield the URL QEMU opens it by."""
    export = secrets.token_urlsafe(18)
    path = sockets / f"disk{index}.sock"
    with writing(repo, clone_name, Holder(f"VM {vm}", f"stop it first (`cairn vm stop {vm}`"
                                          ", which keeps the clone)")), \
            CloneVolume(repo, get_clone(repo, clone_name)) as volume:
        with NbdServer(CloneDevice(volume), export_name=export, serialize=False,
                       unix_path=path):
            yield f"nbd+unix:///{export}?socket={path}"
        volume.flush()


def stop_timeout(folder: Path) -> float:
    try:
        return float(json.loads((folder / "stop.json").read_text())["timeout"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_STOP_TIMEOUT


def run(folder: Path) -> int:
    """Run the VM of ``folder`` until it powers off or SIGTERM stops it."""
    status = Status(folder)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sockets = scratch.make(f"{SCRATCH_PREFIX}disks-")
    status.set(scratch=[str(sockets)])  # a SIGKILL leaves it: the appliance removes it
    try:
        spec = VmSpec.load(folder)
        with spec.open_repo() as repo, contextlib.ExitStack() as disks:
            drives = [disks.enter_context(exported_disk(repo, clone, sockets, i, spec.name))
                      for i, clone in enumerate(spec.clones)]
            vm = VirtualMachine(
                drive=drives[0], more_drives=tuple(drives[1:]), format="raw",
                snapshot=False, interface=spec.disk_bus, firmware=spec.firmware,
                memory_mib=spec.memory_mib, cpus=spec.cpus, nics=tuple(spec.nics),
                serial=True, vnc_display="auto", vnc_password=spec.vnc_password,
                start_timeout=30.0)
            with_tcg_fallback(vm, lambda vm: _supervise(vm, status, stop, folder))
    except Exception as exc:  # the appliance reads the reason from the status file
        status.set(state="failed", error=str(exc) or type(exc).__name__, ended=time.time())
        return 1
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    status.set(state="stopped", ended=time.time())
    return 0


def _supervise(vm: VirtualMachine, status: Status, stop: threading.Event, folder: Path
               ) -> None:
    status.set(state="running", qemu_pid=vm.pid, vnc_port=vm.vnc_port(), accel=vm.used_accel,
               serial=str(vm.workdir / "serial.sock"), started=time.time(),
               scratch=[*status.fields["scratch"], str(vm.workdir)])
    while not stop.wait(0.5) and vm.running():
        if vm.kvm_failed():
            raise KvmCannotRun("KVM stopped the guest with an internal error")
    if not vm.running():
        return
    status.set(state="stopping")
    with contextlib.suppress(Exception):
        vm.powerdown()
    deadline = time.monotonic() + stop_timeout(folder)
    while vm.running() and time.monotonic() < deadline:
        time.sleep(0.2)
    status.set(forced=vm.running())


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
