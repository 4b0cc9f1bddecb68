"""The agent daemon: poll the appliance for jobs, back up every protected volume, report.

A job is never lost to a network problem: while the appliance is unreachable the agent
keeps retrying, and if it gives up (or is killed, or the appliance refuses its report) the
job stays ``running`` on the appliance, which hands the same job back on the next poll; the
volume's upload resumes where it stopped; the daemon never exits over one job. Anything
else that goes wrong (a hook, an unreadable source) fails the job with the one-line reason,
which the appliance keeps in the job history.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cairn import logs
from cairn.agent.client import ApplianceClient
from cairn.agent.config import AgentConfig
from cairn.agent.upload import VolumeBackup, VolumeResult, retrying
from cairn.errors import ApplianceUnreachable, CairnError


def connect(config: AgentConfig) -> ApplianceClient:
    url, token, fingerprint, certificate = config.require_pairing()
    try:
        pem = Path(certificate).read_text()
    except OSError as exc:
        raise CairnError(f"pinned certificate {certificate} is unreadable ({exc.strerror}): "
                         "pair again with `cairn agent pair`") from None
    return ApplianceClient(url, token, fingerprint, pem)


class Agent:
    def __init__(self, config: AgentConfig, retry_seconds: float = 300.0) -> None:
        self.config = config
        self.retry_seconds = retry_seconds
        self.client = connect(config)

    def close(self) -> None:
        self.client.close()

    def run(self, once: bool) -> int:
        """Take and run jobs; with ``once``, stop when none is waiting. Returns jobs run."""
        done = 0
        while True:
            try:
                job = self.client.json("POST", "/api/v1/agent/jobs/next")
            except ApplianceUnreachable as exc:
                if once:
                    raise
                logs.event("agent.unreachable", error=str(exc))
                time.sleep(self.config.poll_seconds)
                continue
            if job is None:
                if once:
                    return done
                time.sleep(self.config.poll_seconds)
                continue
            try:
                self.run_job(job)
            except CairnError as exc:
                # Unreachable, or the appliance refused the report: the job stays running
                # there and comes back (or times out); the daemon itself carries on.
                if once:
                    raise
                logs.event("job.interrupted", job=job["id"], error=str(exc))
                time.sleep(self.config.poll_seconds)
                continue
            done += 1

    def run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        logs.event("job.started", job=job["id"], attempt=job["attempts"],
                   full_rescan=job["full_rescan"])
        results: list[VolumeResult] = []
        errors: list[str] = []
        if not self.config.volumes:
            errors.append("no volume is protected on this machine: run `cairn agent protect`")
        for name, volume in sorted(self.config.volumes.items()):
            backup = VolumeBackup(self.client, name, volume, Path(self.config.state_dir),
                                  self.config.max_bytes_per_second, self.retry_seconds)
            try:
                results.append(backup.run(bool(job["full_rescan"])))
            except ApplianceUnreachable:
                raise
            except CairnError as exc:
                errors.append(str(exc))
                logs.event("volume.failed", job=job["id"], volume=name, error=str(exc))
        report = {"ok": not errors, "error": "; ".join(errors) or None,
                  "bytes_read": sum(r.bytes_read for r in results),
                  "points": [r.point for r in results]}
        deadline = time.monotonic() + self.retry_seconds
        retrying(lambda: self.client.json("POST", f"/api/v1/agent/jobs/{job['id']}/finish",
                                          json=report), deadline)
        summary = {"job": job["id"], **report, "volumes": [asdict(r) for r in results]}
        logs.event("job.finished", **summary)
        sys.stdout.write(json.dumps(summary) + "\n")
        sys.stdout.flush()
        return summary
