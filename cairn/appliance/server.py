"""Starting the appliance: repository checks, TLS identity, admin token, scheduler, HTTPS.

First start creates what later starts reuse: the certificate under ``<repo>/tls/`` (agents
pin it), and the admin token in ``<repo>/admin-token`` (mode 0600, root only; the value
of ``CAIRN_ADMIN_TOKEN`` is valid too while it is set: see `cairn.appliance.tokens`). Jobs a
previous process left running go back to the queue; sessions a killed ingest left in the
store are cleaned by the store itself on the next backup of that volume, and the temporary
folders of a killed appliance's own QEMU work (a verification's VM, an agentless backup's
fleecing view, a download's conversion and a state copy in the repository's folder) are
removed (`cairn.scratch`), as are the key and temporary folder of an
export that died while it was down (`cairn.ops.exports`: a host reboot kills them all).
"""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn

from cairn import logs, scratch
from cairn.appliance import tokens
from cairn.appliance.agentless import AgentlessRunner
from cairn.appliance.app import create_app
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.offsite_loop import OffsiteLoop
from cairn.appliance.repacker import Repacker
from cairn.appliance.scheduler import Scheduler
from cairn.appliance.state import State
from cairn.appliance.state_backup import COPY_PREFIX
from cairn.appliance.tls import ensure_certificate
from cairn.appliance.verifier import Verifier
from cairn.appliance.watch import AlertLoop
from cairn.errors import ListenError, UsageError
from cairn.ops.exports import ExportManager
from cairn.sources.qemu_view import WORKDIR_PREFIX
from cairn.store.repository import Repository
from cairn.virt.qemu import SCRATCH_PREFIX
from cairn.web.points import CONVERT_PREFIX


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"listen address {text!r} is not HOST:PORT, e.g. 127.0.0.1:8443")
    return host.strip("[]"), int(port)


def _tidy(repo_path: Path) -> None:
    """Remove what a killed appliance, or a killed export, left behind (see above)."""
    for prefix in (SCRATCH_PREFIX, WORKDIR_PREFIX):
        scratch.sweep(prefix)
    for prefix in (CONVERT_PREFIX, COPY_PREFIX):
        scratch.sweep(prefix, repo_path)
    ExportManager(repo_path).list()  # finding an export gone forgets its secrets


def serve(repo_path: Path, config: ApplianceConfig) -> int:
    logs.setup(config.log_level)
    Repository.open(repo_path).close()
    host, port = parse_listen(config.listen)
    cert, key, fingerprint = ensure_certificate(repo_path / "tls")
    state = State(repo_path / "appliance.db")
    tokens.start(repo_path, state)
    requeued = state.requeue_running()
    _tidy(repo_path)
    scheduler = Scheduler(state, config)
    alerts = AlertLoop(repo_path, state, config)
    agentless = AgentlessRunner(repo_path, state, config)
    offsite = OffsiteLoop(repo_path, state, config)
    verifier = Verifier(repo_path, state, config)
    repacker = Repacker(repo_path, config)
    app = create_app(repo_path, state, config)
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, ssl_certfile=str(cert), ssl_keyfile=str(key),
        log_config=None, access_log=False, timeout_keep_alive=30))
    logs.event("appliance.starting", repo=str(repo_path), listen=f"{host}:{port}",
               fingerprint=fingerprint, requeued_jobs=requeued, pid=os.getpid())
    scheduler.start()
    alerts.start()
    agentless.start()
    offsite.start()
    verifier.start()
    repacker.start()
    try:
        server.run()
    except SystemExit:
        server.started = False
    finally:
        scheduler.stop()
        alerts.stop()
        agentless.stop()
        offsite.stop()
        verifier.stop()
        repacker.stop()
        state.close()
    if not server.started:
        raise ListenError("the appliance API", host, port, "address in use or not allowed")
    logs.event("appliance.stopped")
    return 0
