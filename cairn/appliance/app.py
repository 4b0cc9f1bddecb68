"""The REST API (OpenAPI at ``/docs``): admins manage, agents upload, Prometheus scrapes.

One router per area under `cairn.appliance.routes` (status, pairing, machines, points,
jobs, schedules, uploads, alerts, agentless, tokens, offsite, verification, space) and the VMs'
(`vm_routes`); who may call what is in `cairn.appliance.auth`, how errors answer in
`cairn.appliance.errors`. Every refusal is a 4xx with
``{"detail": "one line naming the problem and the fix"}``; a 500 means a bug.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from cairn import __version__
from cairn.appliance import errors
from cairn.appliance.auth import AdminOnly, admin
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.context import Context
from cairn.appliance.limits import BodyLimit
from cairn.appliance.responses import IsoTimesJSON
from cairn.appliance.routes import (
    agentless,
    alerts,
    docs,
    exports,
    jobs,
    lans,
    machines,
    offsite,
    pairing,
    point_defense,
    points,
    rollback,
    schedules,
    space,
    status,
    tokens,
    uploads,
    verification,
)
from cairn.appliance.state import State
from cairn.appliance.tasks import Tasks
from cairn.appliance.uploads import Uploads
from cairn.appliance.vm_routes import vm_router
from cairn.virt.vms import VmManager
from cairn.web.console import install as install_console


def create_app(repo_path: Path, state: State, config: ApplianceConfig) -> FastAPI:
    app = FastAPI(title="cairn appliance", version=__version__, docs_url=None, redoc_url=None,
                  default_response_class=IsoTimesJSON,
                  description="Backups where every recovery point is whole.")
    agent_uploads = Uploads(repo_path, state, config.upload_bodies)
    tasks = Tasks()
    app.state.cairn = Context(repo_path, state, config, agent_uploads, tasks)
    app.add_middleware(BodyLimit, known=lambda t: state.is_admin(t) or bool(state.agent(t)))
    errors.install(app)
    for area in (status, pairing, machines, points, point_defense, jobs, schedules, uploads,
                 docs):
        app.include_router(area.router)
    machines_running = VmManager(repo_path)
    app.include_router(vm_router(machines_running, admin))
    app.include_router(lans.router(machines_running), dependencies=[AdminOnly])
    app.include_router(rollback.router(repo_path, config), dependencies=[AdminOnly])
    app.include_router(alerts.router(repo_path), dependencies=[AdminOnly])
    app.include_router(agentless.router(state), dependencies=[AdminOnly])
    app.include_router(tokens.router(repo_path, state), dependencies=[AdminOnly])
    app.include_router(offsite.router(repo_path, state, config), dependencies=[AdminOnly])
    app.include_router(verification.router(state), dependencies=[AdminOnly])
    app.include_router(space.router, dependencies=[AdminOnly])
    app.include_router(exports.router(repo_path), dependencies=[AdminOnly])
    install_console(app, repo_path, state, config, machines_running, tasks)
    return app
