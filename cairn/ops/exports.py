"""Appliance-owned exports: diskless restore started through the REST API.

The appliance runs the very `cairn export` the CLI runs (`cairn.ops.export`), as a process in
a session of its own, the way it owns managed VMs (`cairn.virt.vms`): so an export outlives
the request and a restart of the appliance, and its decoded-block cache takes its share of
the machine's budget in the ledger every export shares (`cairn.ops.cache_budget`). Each
export has a folder ``<repo>/exports/<id>/`` (mode 0700): ``spec.json`` (what was asked and
the command line), ``out.jsonl`` (the export's ``--json`` report: its URLs, secret names
included), ``export.log`` and, for a pre-shared key, ``keys.psk`` (mode 0600). Listing reads
the folders: ``running`` while the process lives, ``gone`` once it died without being stopped.

The process's temporary directory is a folder of its own (``TMPDIR``, named in ``spec.json``
as ``scratch``): what it makes there (a psk export's key copy, sockets, the relay's log)
would outlive a SIGKILL. So a secret never outlives its export, both that folder and
``keys.psk`` are removed when the export is found gone, and when it is stopped. It is also
told its id (``CAIRN_EXPORT_ID``), so that a VM or export refused because it holds a clone
is told which export to stop (`cairn.store.clone_writers`).

Always TLS: the appliance's certificate (``cert``: clients use ``REPO/tls/cert.pem``, the one
the API serves, as their CA) or a key made for this export (``psk``: `key` gives the
``identity:hexkey`` line clients put in their key file).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cairn import scratch
from cairn.errors import CairnError, InUse, NotKnown, UsageError
from cairn.ops.export import EXPORT_ID_ENV
from cairn.ops.machine_points import disks_of
from cairn.store.clone_writers import check_free
from cairn.store.clones import CloneNotFound, get_clone
from cairn.store.repository import Repository
from cairn.virt.failback import keep_as_point
from cairn.virt.owned import alive, read_json, stop_process, tail
from cairn.virt.vm_runner import write_json

TLS_MODES = ("cert", "psk")
EXPORT_ID = re.compile(r"^[0-9a-f]{12}$")
PSK_IDENTITY = "cairn"
START_TIMEOUT = 60.0
STOP_PATIENCE = 15.0
SCRATCH_PREFIX = "cairn-export-run-"


class ExportNotFound(NotKnown):
    def __init__(self, export_id: str) -> None:
        super().__init__(f"no export {export_id!r}: `cairn exports` (GET /api/v1/exports) lists "
                         "them")


class PortInUse(InUse):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"port {port} on {host} is in use: choose another, or 0 for a free one")


class ExportFailed(CairnError):
    """The export process died before serving (not the request's fault)."""


@dataclass(frozen=True)
class ExportStart:
    """What to serve (a point reference or a clone name), where (port 0: a free one), with
    which TLS (``cert`` or ``psk``), and whether a clone takes writes (a point never does)."""

    target: str
    host: str = "127.0.0.1"
    port: int = 0
    tls: str = "cert"
    writable: bool = False


@dataclass(frozen=True)
class OwnedExport:
    """An export as listed: the first disk's address and secret name at the top, every
    disk's (a machine point has several) in ``disks``."""

    id: str
    target: str
    state: str
    tls: str
    writable: bool
    host: str
    port: int | None
    export_name: str | None
    url: str | None
    disks: list[dict[str, Any]]
    pid: int | None
    created: float
    psk_identity: str | None
    error: str | None = None
    point: str | None = None
    """what clients wrote, kept as a point when the export was stopped"""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_port(host: str, port: int) -> None:
    """Refuse a port already taken before starting anything (port 0 is always free)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise UsageError(f"cannot listen on {_address(host, port)} "
                         f"({exc.strerror or exc}): give an address of this machine") from None
    except (UnicodeError, ValueError):
        raise UsageError(f"{host!r} is not a host name or address") from None


class ExportManager:
    """Start, list and stop the exports of one repository; one per appliance process."""

    def __init__(self, repo_path: Path) -> None:
        self.repo_path = repo_path
        self.folder = repo_path / "exports"
        self._lock = threading.Lock()

    def _check_target(self, request: ExportStart) -> None:
        """Refuse an unknown point (404), a writable point (400), a clone another process
        writes (a VM, say), or a writable clone one reads (409), before starting."""
        with Repository.open(self.repo_path) as repo:
            try:
                get_clone(repo, request.target)
                check_free(repo, request.target, request.writable)
                return
            except CloneNotFound:
                disks_of(repo, request.target)
        if request.writable:
            raise UsageError(f"{request.target} is a point, always read-only: clone it "
                             "(`cairn clone`) and export the clone to take writes")

    def start(self, request: ExportStart) -> OwnedExport:
        if request.tls not in TLS_MODES:
            raise UsageError(f"tls {request.tls!r}: choose cert (the appliance's "
                             "certificate) or psk (a pre-shared key)")
        self._check_target(request)
        _check_port(request.host, request.port)
        export_id = secrets.token_hex(6)
        folder = self.folder / export_id
        with self._lock:
            self.folder.mkdir(mode=0o700, exist_ok=True)
            folder.mkdir(mode=0o700)
        tmp = tempfile.mkdtemp(prefix=SCRATCH_PREFIX)  # not `scratch.make`: the export outlives us
        try:
            argv = self._argv(request, folder)
            write_json(folder / "spec.json", {**asdict(request), "id": export_id,
                                              "argv": argv, "created": time.time(),
                                              "scratch": [tmp]})
            self._spawn(folder, argv, tmp)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.get(export_id)

    def _argv(self, request: ExportStart, folder: Path) -> list[str]:
        """The `cairn export` command line of ``request``; a psk export's key made here."""
        argv = [sys.executable, "-m", "cairn", "export", "--repo", str(self.repo_path),
                request.target, "--nbd", _address(request.host, request.port), "--json"]
        if request.tls == "psk":
            keys = folder / "keys.psk"
            fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{PSK_IDENTITY}:{secrets.token_hex(32)}\n")
            argv += ["--tls-psk", str(keys)]
        else:
            argv.append("--tls")
        if not request.writable:
            argv.append("--read-only")
        return argv

    @staticmethod
    def _spawn(folder: Path, argv: list[str], tmp: str) -> None:
        """Start the export in its own session, its temporary files in ``tmp``; wait
        until it serves or fails."""
        with open(folder / "out.jsonl", "wb") as out, open(folder / "export.log", "ab") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=log,
                                       start_new_session=True, close_fds=True,
                                       env={**os.environ, "TMPDIR": tmp,
                                            EXPORT_ID_ENV: folder.name})
        write_json(folder / "status.json", {"pid": process.pid})
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if _report(folder):
                threading.Thread(target=process.wait, daemon=True).start()  # reap it later
                return
            code = process.poll()
            if code is not None:
                reason = tail(folder / "export.log", 1)
                raise UsageError(reason) if code == 2 else ExportFailed(
                    f"the export did not start: {reason}")
            time.sleep(0.05)
        process.kill()
        process.wait()
        raise ExportFailed(f"the export did not start within {START_TIMEOUT:.0f} s: "
                           f"{tail(folder / 'export.log')}")

    def _folder(self, export_id: str) -> Path:
        if not EXPORT_ID.match(export_id):
            raise ExportNotFound(export_id)
        return self.folder / export_id

    def list(self) -> list[OwnedExport]:
        if not self.folder.is_dir():
            return []
        found = []
        for folder in sorted(self.folder.iterdir()):
            with contextlib.suppress(ExportNotFound):
                found.append(self.get(folder.name))
        return found

    def get(self, export_id: str) -> OwnedExport:
        folder = self._folder(export_id)
        spec = read_json(folder / "spec.json")
        if not spec:
            raise ExportNotFound(export_id)
        pid = read_json(folder / "status.json").get("pid")
        running = alive(pid, _marker(spec["argv"]))
        if not running and pid is not None:  # no pid yet: still starting, not gone
            _forget_secrets(folder, spec)
        disks = [_disk(one) for one in _report(folder).get("exports", [])]
        first = disks[0] if disks else {}
        return OwnedExport(
            id=spec["id"], target=spec["target"], state="running" if running else "gone",
            tls=spec["tls"], writable=spec["writable"], host=spec["host"],
            port=first.get("port"), export_name=first.get("export_name"),
            url=first.get("url"), disks=disks, pid=pid if running else None,
            created=spec["created"],
            psk_identity=PSK_IDENTITY if spec["tls"] == "psk" else None,
            error=None if running else tail(folder / "export.log", 1))

    def key(self, export_id: str) -> str:
        """The ``identity:hexkey`` line a psk export's clients put in their key file."""
        folder = self._folder(export_id)
        if self.get(export_id).tls != "psk":
            raise UsageError(f"export {export_id} uses the appliance's certificate, not a "
                             "key: clients verify it with REPO/tls/cert.pem")
        try:
            return (folder / "keys.psk").read_text().strip()
        except FileNotFoundError:
            raise UsageError(f"export {export_id} is gone, and its key with it: stop it "
                             "(`cairn exports stop`) and start a new export") from None

    def stop(self, export_id: str, keep: bool = False) -> OwnedExport:
        """Stop the export's process (a gone one is only forgotten) and forget it; with
        ``keep``, what clients wrote to its clone becomes the newest point of the volume
        (failback, as `vm stop --keep-as-point`), and the clone stays."""
        info = self.get(export_id)
        if keep and not info.writable:
            raise UsageError(f"export {export_id} is read-only: clients wrote nothing to keep "
                             "as a point (stop it without keeping)")
        folder = self._folder(export_id)
        if info.pid is not None:
            stop_process(info.pid, _marker(read_json(folder / "spec.json")["argv"]),
                         STOP_PATIENCE)
        _forget_secrets(folder, read_json(folder / "spec.json"))
        point = None
        if keep:
            with Repository.open(self.repo_path) as repo:
                point = keep_as_point(repo, get_clone(repo, info.target)).id
        shutil.rmtree(folder, ignore_errors=True)
        return OwnedExport(**{**asdict(info), "state": "stopped", "pid": None, "error": None,
                              "point": point})


def _forget_secrets(folder: Path, spec: dict[str, Any]) -> None:
    """Remove the key and temporary folder of an export whose process is dead (a SIGKILL
    left them): no client can use the key any more, and nothing else would remove them."""
    scratch.remove(spec.get("scratch"), SCRATCH_PREFIX)
    (folder / "keys.psk").unlink(missing_ok=True)


def _marker(argv: list[str]) -> bytes:
    """The whole command line, as /proc shows it: only this export's process matches."""
    return b"\0".join(arg.encode() for arg in argv) + b"\0"


def _report(folder: Path) -> dict[str, Any]:
    """The export's ``exporting`` event, once it wrote it."""
    try:
        first = (folder / "out.jsonl").read_text().split("\n", 1)[0]
        event = json.loads(first)
    except (OSError, ValueError):
        return {}
    return event if isinstance(event, dict) and event.get("event") == "exporting" else {}


def _disk(one: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(one["url"])
    return {"disk": one["disk"], "what": one["what"], "size": one["size"],
            "read_only": one["read_only"], "url": one["url"], "port": url.port,
            "export_name": url.path.lstrip("/")}
