"""Managed VMs: points run as machines for as long as the business needs them.

The appliance owns them, not the command that asked: each VM is a runner process
(`cairn.virt.vm_runner`) in a session of its own, started from here, with its folder
``<repo>/vms/<name>/`` (mode 0700) holding ``spec.json`` (what was asked), ``status.json``
(what the runner reports) and ``runner.log``. Listing reads the folders, so after an
appliance restart every VM is found again: running if its runner lives, ``gone`` if the
runner died without stopping (a host reboot, a kill); a gone VM keeps its clones, and
`stop` tidies it up like any other (it can still keep what the VM wrote as a point). The
temporary folders a killed runner could not remove (its disks' sockets, QEMU's own; the
runner names them in ``status.json`` as ``scratch``) are removed when it is found gone.

A VM can also run a point of a cloud repository (``repo`` ``s3://BUCKET/PREFIX``), on any
node with the bucket and the key: the appliance opens it at the request's ``endpoint``, else
with its own endpoint profile or ``CAIRN_S3_*`` settings, and with the request's key, else
its own key (else this node's integrity key of that repository). The endpoint and the key
are kept with the VM (``spec.json``), so its runner, its stop and a later start of its kept
clone reach the same bucket. A bucket that cannot be reached, a key that does not open it
or a point it lacks is refused as the request's fault (a `UsageError`), keeping nothing;
its clones live in this node's cache of it, and the runner serves them reading blocks on
demand through the point reader's bounded cache, as `virtualize --repo s3://...` does.

Starting checks everything it can before QEMU does (name, point, boot loader, firmware,
networks, host ports), so a refusal is one clear line and leaves nothing behind. Stopping
presses the ACPI power button, forces the VM off after the timeout, then keeps, stores
(`--keep-as-point`) or discards what the VM wrote.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cairn import scratch
from cairn.errors import (
    S3AccessDenied,
    S3Error,
    S3NoSuchBucket,
    S3Unreachable,
    UnknownPoint,
    UnknownVolume,
    UsageError,
    VirtualMachineError,
)
from cairn.ops.cloud_keys import cloud_key
from cairn.ops.machine_points import disks_of
from cairn.store import marks
from cairn.store.catalog import RecoveryPoint
from cairn.store.clone_writers import check_free
from cairn.store.clones import (
    Clone,
    CloneNotFound,
    CloneVolume,
    create_clone,
    get_clone,
    remove_clone,
)
from cairn.store.machine_points import MachinePoints
from cairn.store.profiles import is_cloud
from cairn.store.repository import Repository
from cairn.virt.failback import keep_as_point
from cairn.virt.firmware import BusChoice, FirmwareChoice, plan_boot
from cairn.virt.lans import Lans
from cairn.virt.network import check_available, join_lans, parse_networks, qemu_args
from cairn.virt.owned import alive, read_json, stop_process, tail
from cairn.virt.qemu import vnc_secret
from cairn.virt.vm_runner import SCRATCH_PREFIX, VmSpec, open_vm_repo, write_json

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
LIVE = ("starting", "running", "stopping")
START_TIMEOUT = 120.0
RUNNER = "cairn.virt.vm_runner"


class VmNotFound(UsageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no VM named {name!r}: `cairn vm list` shows them")


class CloudUnavailable(UsageError):
    """The cloud repository a start names cannot be read: the request's endpoint, bucket or
    credentials, not the appliance, are at fault (REST answers 400 with this line)."""


class VmNameTaken(UsageError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a VM named {name!r} exists: choose another --name, or stop it "
                         f"first (`cairn vm stop {name}`)")


@dataclass(frozen=True)
class VmRequest:
    """``source``: a point reference (id, prefix, VOLUME@latest) or a kept clone's name, of
    the appliance's repository, or of the cloud repository ``repo`` when given."""

    source: str
    repo: str | None = None
    name: str | None = None
    cpus: int = 2
    memory_mib: int = 2048
    networks: list[str] = field(default_factory=list)
    firmware: FirmwareChoice = "auto"
    disk_bus: BusChoice = "auto"
    key: str | None = None
    """the cloud repository's key, as its key file's line (`cairn.ops.cloud_keys`); default:
    the appliance's own key, else this node's integrity key of it"""
    endpoint: str | None = None
    """the cloud repository's S3 endpoint URL; default: this node's profile of it, else
    ``CAIRN_S3_ENDPOINT``"""


@dataclass(frozen=True)
class VmInfo:
    name: str
    state: str
    point: str
    volume: str
    clones: list[str]
    networks: list[str]
    cpus: int
    memory_mib: int
    firmware: str
    disk_bus: str
    vnc: str | None
    accel: str | None
    pid: int | None
    created: float
    origin: str = "local"
    """where the point came from: ``local`` (the appliance's repository) or its cloud URL"""
    endpoint: str | None = None
    """the S3 endpoint the VM's cloud repository is read at, when the start named one"""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Console:
    vnc: str | None
    password: str
    serial: str | None


@dataclass(frozen=True)
class Stopped:
    vm: VmInfo
    forced: bool
    point: str | None
    kept_clones: list[str]


@dataclass
class _Disks:
    """What a VM runs on: its clones in disk order, and the point (or machine point) they
    came from. ``created``: made for this start, so removed if the start fails."""

    point: str
    volume: str
    clones: list[Clone]
    created: bool
    machine: str = ""
    names: list[str] = field(default_factory=list)

    def discard_new(self, repo: Repository) -> None:
        if self.created:
            for clone in self.clones:
                with contextlib.suppress(CloneNotFound):
                    remove_clone(repo, clone.name)


def _new_disks(repo: Repository, ref: str) -> _Disks:
    found = disks_of(repo, ref)
    first = found.points[0]
    machine = found.machine_point
    disks = (_Disks(first.id, first.volume, [], created=True) if machine is None else
             _Disks(machine.id, machine.machine, [], created=True, machine=machine.machine,
                    names=list(found.names)))
    try:
        for point in found.points:
            disks.clones.append(create_clone(repo, point))
    except BaseException:
        disks.discard_new(repo)
        raise
    return disks


def _new_disks_of(repo: Repository, request: VmRequest) -> _Disks:
    """`_new_disks` of the request's point, a point missing from a cloud repository named
    with its URL (the appliance's own is "this repository")."""
    try:
        return _new_disks(repo, request.source)
    except UnknownPoint as exc:
        if request.repo is None:
            raise
        raise UnknownPoint(exc.ref, request.repo) from None
    except UnknownVolume as exc:
        if request.repo is None:
            raise
        raise UnknownVolume(exc.ref, request.repo) from None


def _check_endpoint(url: str) -> None:
    """Refuse what cannot be an S3 endpoint before any request is made with it."""
    try:
        parts = urlsplit(url)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is no number raises here
    except ValueError:
        usable = False
    if not usable:
        raise UsageError(f"{url!r} is not an S3 endpoint URL: write it as https://HOST[:PORT] "
                         "(or http:// on a trusted network)")


class VmManager:
    """Start, list and stop the VMs of one repository; one per appliance process."""

    def __init__(self, repo_path: Path) -> None:
        self.repo_path = repo_path
        self.folder = repo_path / "vms"
        self.lans = Lans(repo_path)
        self._lock = threading.Lock()

    def _repo(self, request: VmRequest, key: Path | None) -> Repository:
        """The appliance's repository, or the cloud repository of ``request`` opened with
        ``key``: use it in a ``with`` block, which closes it."""
        cloud = request.repo
        if cloud is None:
            return Repository.open(self.repo_path)
        if not is_cloud(cloud):
            raise UsageError(f"{cloud!r} is not a cloud repository: a VM runs a point of "
                             "the appliance's own repository (name the point alone) or of a "
                             "cloud one (s3://BUCKET/PREFIX POINT)")
        try:
            return open_vm_repo(cloud, key, request.endpoint)
        except (S3Unreachable, S3NoSuchBucket, S3AccessDenied, S3Error) as exc:
            raise CloudUnavailable(str(exc)) from None

    def _key(self, request: VmRequest, keep: bool = True
             ) -> contextlib.AbstractContextManager[Path | None]:
        """The key file a cloud ``request`` opens its repository with (see `cloud_key`;
        ``keep``: False when nothing will need it after the block)."""
        if request.repo is None:
            if request.key is not None or request.endpoint is not None:
                raise UsageError("a key or an endpoint opens a cloud repository: name it "
                                 "before the point (cairn vm start s3://BUCKET/PREFIX POINT "
                                 "--key-file FILE --endpoint URL)")
            return contextlib.nullcontext()
        if request.endpoint is not None:
            _check_endpoint(request.endpoint)
        return cloud_key(self.repo_path, request.key, keep)

    def points(self, request: VmRequest) -> list[RecoveryPoint]:
        """The points a VM of ``request``'s repository (a cloud one, else the appliance's)
        can start from, newest first (the console lists them to choose one); a key given
        is not kept."""
        with self._key(request, keep=False) as key, self._repo(request, key) as repo:
            return sorted(marks.live_points(repo, None), key=lambda p: -p.created)

    def _vm_folder(self, name: str) -> Path:
        if not NAME.match(name):
            raise UsageError(f"invalid VM name {name!r}: use letters, digits, '_' and '-'")
        return self.folder / name

    # -- start ----------------------------------------------------------------------------

    def start(self, request: VmRequest) -> VmInfo:
        networks = join_lans(parse_networks(request.networks), self.lans)
        if not 1 <= request.cpus <= 64 or not 64 <= request.memory_mib <= 1 << 20:
            raise UsageError("give 1 to 64 --cpus and 64 MiB to 1 TiB of --memory")
        with self._key(request) as key, self._repo(request, key) as repo:
            disks = self._disks_for(repo, request)
            name = request.name or disks.clones[0].name
            folder = self._vm_folder(name)
            try:
                with self._lock:
                    self.folder.mkdir(mode=0o700, exist_ok=True)
                    if folder.exists():
                        raise VmNameTaken(name)
                    folder.mkdir(mode=0o700)
                try:
                    self._spec(repo, request, name, disks, networks, key).save(folder)
                    self._spawn(folder)
                except BaseException:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise
            except BaseException:
                disks.discard_new(repo)
                raise
        return self.get(name)

    def _disks_for(self, repo: Repository, request: VmRequest) -> _Disks:
        """The clones to run: a kept one named by ``source`` (no VM's disk, no writable
        export's: `cairn.store.clone_writers`), or new ones of a
        machine point (every disk, in the machine's order) or of a volume point."""
        try:
            clone = get_clone(repo, request.source)
        except CloneNotFound:
            return _new_disks_of(repo, request)
        origin = request.repo or "local"
        user = next((vm.name for vm in self.list()
                     if vm.origin == origin and clone.name in vm.clones), None)
        if user is not None:
            raise UsageError(f"clone {clone.name} is the disk of VM {user}: stop it first "
                             f"(`cairn vm stop {user}`)")
        check_free(repo, clone.name)
        point = repo.catalog.point(clone.point_id)
        assert point is not None  # a clone's point cannot be deleted
        return _Disks(point.id, point.volume, [clone], created=False)

    def _spec(self, repo: Repository, request: VmRequest, name: str, disks: _Disks,
              networks: list[Any], key: Path | None) -> VmSpec:
        with CloneVolume(repo, disks.clones[0]) as volume:
            plan = plan_boot(volume, f"point {disks.point} ({disks.volume})", request.firmware,
                             request.disk_bus)
        check_available(networks)
        model = "virtio-net-pci" if plan.linux else "e1000"
        return VmSpec(
            name=name, repo=request.repo or str(self.repo_path),
            clones=[c.name for c in disks.clones], point=disks.point, volume=disks.volume,
            cpus=request.cpus, memory_mib=request.memory_mib, firmware=plan.firmware,
            disk_bus=plan.disk_bus, networks=[n.describe() for n in networks],
            nics=qemu_args(networks, name, model), vnc_password=vnc_secret(),
            machine=disks.machine, disks=disks.names,
            key_file=str(key or ""), endpoint=request.endpoint or "")

    def _spawn(self, folder: Path) -> None:
        """Start the runner in its own session and wait until QEMU runs or the runner fails."""
        with open(folder / "runner.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", RUNNER, str(folder)], stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True, close_fds=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            status = read_json(folder / "status.json")
            if status.get("state") == "running":
                threading.Thread(target=process.wait, daemon=True).start()  # reap it later
                return
            if process.poll() is not None:
                reason = status.get("error") or tail(folder / "runner.log")
                raise VirtualMachineError(f"the VM did not start: {reason}")
            time.sleep(0.1)
        process.kill()
        process.wait()
        raise VirtualMachineError(f"the VM did not start within {START_TIMEOUT:.0f} s: "
                                  f"{tail(folder / 'runner.log')}")

    # -- list -----------------------------------------------------------------------------

    def list(self) -> list[VmInfo]:
        if not self.folder.is_dir():
            return []
        infos = []
        for folder in sorted(self.folder.iterdir()):
            with contextlib.suppress(VmNotFound):
                infos.append(self.get(folder.name))
        return infos

    def get(self, name: str) -> VmInfo:
        folder = self._vm_folder(name)
        try:
            spec = VmSpec.load(folder)
        except (OSError, ValueError, TypeError):
            raise VmNotFound(name) from None
        status = read_json(folder / "status.json")
        state = str(status.get("state", "starting"))
        pid = status.get("pid")
        if state in LIVE and not alive(pid, RUNNER.encode()):
            state = "gone"
            scratch.remove(status.get("scratch"), SCRATCH_PREFIX)
        port = status.get("vnc_port")
        return VmInfo(
            name=spec.name, state=state, point=spec.point, volume=spec.volume,
            clones=spec.clones, networks=spec.networks, cpus=spec.cpus,
            memory_mib=spec.memory_mib, firmware=spec.firmware, disk_bus=spec.disk_bus,
            vnc=f"127.0.0.1:{port}" if port and state == "running" else None,
            accel=status.get("accel"), pid=pid if state in LIVE else None,
            created=spec.created, origin=spec.repo if spec.cloud else "local",
            endpoint=spec.endpoint or None, error=status.get("error"))

    def console(self, name: str) -> Console:
        info = self.get(name)
        folder = self._vm_folder(name)
        status = read_json(folder / "status.json")
        serial = status.get("serial") if info.state == "running" else None
        return Console(info.vnc, VmSpec.load(folder).vnc_password, serial)

    def remove_lan(self, name: str) -> None:
        """Forget an isolated LAN no VM is plugged into."""
        self.lans.remove(name, [vm.name for vm in self.list()
                                if f"isolated:{name}" in vm.networks])

    # -- stop -----------------------------------------------------------------------------

    def stop(self, name: str, keep_as_point_: bool = False, discard: bool = False,
             timeout: float = 30.0) -> Stopped:
        """Stop the VM (ACPI, then forced after ``timeout``); keep, store or drop its disk."""
        if keep_as_point_ and discard:
            raise UsageError("--keep-as-point and --discard exclude each other: choose one")
        info = self.get(name)
        folder = self._vm_folder(name)
        spec = VmSpec.load(folder)
        if keep_as_point_ and spec.cloud:
            raise UsageError(f"VM {name} runs a point of the cloud repository {spec.repo}: "
                             "--keep-as-point stores points in the appliance's own repository "
                             "only; stop it without (its clone stays in this node's cache) or "
                             "with --discard")
        if info.pid is not None:
            write_json(folder / "stop.json", {"timeout": timeout})
            stop_process(info.pid, RUNNER.encode(), timeout + 30)
        status = read_json(folder / "status.json")
        point: str | None = None
        if keep_as_point_ or discard:
            with spec.open_repo() as repo:
                if keep_as_point_:
                    point = self._keep(repo, spec)
                for clone in info.clones:
                    with contextlib.suppress(CloneNotFound):
                        remove_clone(repo, clone)
        shutil.rmtree(folder, ignore_errors=True)
        kept = [] if keep_as_point_ or discard else info.clones
        return Stopped(info, bool(status.get("forced")), point, kept)


    @staticmethod
    def _keep(repo: Repository, spec: VmSpec) -> str:
        """Failback: each disk a new point of its volume; a machine's disks also a new
        machine point, in the same order, so the machine can be restored or run again."""
        points = [keep_as_point(repo, get_clone(repo, clone)) for clone in spec.clones]
        if not spec.machine:
            return points[0].id
        machine_point = MachinePoints(repo.catalog).record(
            repo.new_point_id(), spec.machine, time.time(), "crash",
            f"what VM {spec.name} wrote", list(zip(spec.disks, points, strict=True)))
        return machine_point.id
