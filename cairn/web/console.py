"""`install`: the console's routers and static files added to the appliance's app.

Kept out of the package's ``__init__`` so that `cairn users` (which needs only
`cairn.web.users`) does not load FastAPI and every page module.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from cairn.appliance.config import ApplianceConfig
from cairn.appliance.state import State
from cairn.appliance.tasks import Tasks
from cairn.virt.vms import VmManager
from cairn.web import (
    auth,
    cloud_vms,
    exports,
    files,
    jobs,
    machines,
    points,
    schedules,
    settings,
    space,
    totp,
    vms,
)
from cairn.web.pages import STATIC, Console
from cairn.web.users import Users


def install(app: FastAPI, repo_path: Path, state: State, config: ApplianceConfig,
            machines_running: VmManager, tasks: Tasks) -> Console:
    """Add the console to ``app``; its VMs are ``machines_running`` and its long
    operations ``tasks``, the REST API's."""
    console = Console(repo_path, state, config, Users(state), tasks)
    guard = auth.Auth(console.users)
    app.include_router(auth.router(console, guard, auth.LoginLimiter()))
    app.include_router(machines.router(console, guard))
    app.include_router(points.router(console, guard))
    app.include_router(files.router(console, guard))
    app.include_router(vms.router(console, guard, machines_running))
    app.include_router(cloud_vms.router(console, guard, machines_running))
    app.include_router(exports.router(console, guard))
    app.include_router(jobs.router(console, guard, machines_running))
    app.include_router(settings.router(console, guard))
    app.include_router(space.router(console, guard))
    app.include_router(totp.router(console, guard))
    app.include_router(schedules.router(console, guard))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if vms.NOVNC.is_dir():
        app.mount("/novnc", StaticFiles(directory=vms.NOVNC), name="novnc")
    return console
