"""A real appliance (`cairn serve` process on a free loopback port) and real agents for tests.

Time is compressed through the appliance's own config (a 0.1 s scheduler tick, a 1 s
minimum interval, offline after 2 s), never by patching code. Everything started here is
stopped by the fixtures, even when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cairn.agent.client import ApplianceClient, fingerprint_der
from cairn.ops.exports import ExportManager

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "tests.appliance.cairn_cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def cairn(*args: str | Path, check: bool = True, timeout: float = 120,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                            env={**ENV, **(env or {})}, timeout=timeout)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def kill_exports(repo: Path) -> None:
    """Kill every export process the appliance of ``repo`` started: they live in sessions
    of their own, so stopping the appliance leaves them (as it should, but not in tests),
    then list them as the appliance does, which removes what the killed ones left."""
    for status in (repo / "exports").glob("*/status.json"):
        with contextlib.suppress(ProcessLookupError, ValueError, KeyError, OSError):
            os.kill(json.loads(status.read_text())["pid"], signal.SIGKILL)
    manager = ExportManager(repo)
    wait_for(lambda: all(export.state != "running" for export in manager.list()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Any, timeout: float = 20.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(every)


class Appliance:
    """``alerts`` fills the config's [alerts] table; ``env`` adds to the process environment."""

    def __init__(self, work: Path, alerts: dict[str, float] | None = None,
                 env: dict[str, str] | None = None, encrypt: bool = False,
                 **scheduler: float) -> None:
        self.work = work
        self.repo = work / "repo"
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.config = work / "appliance.toml"
        settings = {"tick_seconds": 0.1, "min_interval_seconds": 1, "offline_after_seconds": 2,
                    "job_lease_seconds": 60, **scheduler}
        self.config.write_text("[scheduler]\n" + "".join(
            f"{k} = {v}\n" for k, v in settings.items()) + "[alerts]\n" + "".join(
            f"{k} = {v}\n" for k, v in (alerts or {}).items()))
        self.env = {**ENV, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = work / "appliance.log"
        cairn("init", "--repo", self.repo, *(["--encrypt"] if encrypt else []))

    def start(self, *serve_args: str, timeout: float = 90) -> None:
        """Serve ``self.repo`` (``serve_args``: e.g. ``--recover-from URL``).

        The wait is long because a start on a loaded CI machine took over 30 s; an
        appliance that dies is still reported at once (`_up` polls the process)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--repo", str(self.repo), "--listen", f"127.0.0.1:{self.port}",
                 "--config", str(self.config), *serve_args], cwd=ROOT, env=self.env,
                stdout=log, stderr=log)
        wait_for(self._up, timeout=timeout)

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"appliance exited: {self.log.read_text()[-3000:]}")
        if not (self.repo / "tls" / "cert.pem").exists():
            return False
        try:
            with self.client(None) as c:
                return c.json("GET", "/healthz")["status"] == "ok"
        except Exception:
            return False

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def pem(self) -> str:
        return (self.repo / "tls" / "cert.pem").read_text()

    def client(self, token: str | None) -> ApplianceClient:
        import ssl

        pem = self.pem
        return ApplianceClient(self.url, token, fingerprint_der(ssl.PEM_cert_to_DER_cert(pem)),
                               pem)

    def admin(self) -> ApplianceClient:
        return self.client((self.repo / "admin-token").read_text().strip())

    def admin_args(self) -> list[str]:
        return ["--repo", str(self.repo), "--appliance", self.url]

    def jobs(self, machine: str | None = None) -> list[dict[str, Any]]:
        with self.admin() as c:
            return c.json("GET", "/api/v1/jobs", params={"machine": machine} if machine else {})

    def metrics(self) -> str:
        with self.admin() as c:
            return c.request("GET", "/metrics").text


class Agent:
    """One protected machine: its config file, its state dir, and `cairn agent` runs."""

    def __init__(self, appliance: Appliance, name: str, **settings: Any) -> None:
        self.appliance = appliance
        self.name = name
        self.dir = appliance.work / f"agent-{name}"
        self.dir.mkdir()
        self.config = self.dir / "agent.toml"
        token = json.loads(cairn("machines", *appliance.admin_args(), "--json", "add",
                                 name).stdout)["pairing_token"]
        cairn("agent", "pair", "--config", self.config, "--appliance", appliance.url,
              "--token", token, "--state-dir", self.dir / "state")
        text = self.config.read_text().replace("poll_seconds = 10.0", "poll_seconds = 0.1")
        extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
        head, sep, tail = text.partition("\n[volumes")
        self.config.write_text(head.rstrip("\n") + "\n" + extra + sep + tail)
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def token(self) -> str:
        import tomllib

        return str(tomllib.loads(self.config.read_text())["token"])

    def protect(self, volume: str, path: Path, *hooks: str) -> None:
        cairn("agent", "protect", "--config", self.config, "--volume", volume, path, *hooks)

    def run_once(self, check: bool = True) -> list[dict[str, Any]]:
        result = cairn("agent", "run", "--once", "--config", self.config, "--retry-seconds",
                       "5", check=check)
        return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]

    def start(self) -> subprocess.Popen[bytes]:
        log = open(self.dir / "agent.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([*CLI, "agent", "run", "--config", str(self.config)], cwd=ROOT,
                                env=ENV, stdout=log, stderr=log)
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs.clear()

    def backup(self) -> dict[str, Any]:
        """Queue a job now and run it with a one-shot agent; returns the agent's summary."""
        with self.appliance.admin() as c:
            c.json("POST", f"/api/v1/machines/{self.name}/jobs", json={})
        summaries = self.run_once()
        assert len(summaries) == 1, summaries
        return summaries[0]


def restore(appliance: Appliance, point: str, out: Path) -> bytes:
    cairn("restore", "--repo", appliance.repo, point, out)
    return out.read_bytes()
