"""Booting a point from the console, with its screen in the page (noVNC).

The VM is `cairn.ops.virtualize`, what `cairn virtualize` runs. Its VNC server listens
on loopback only, behind a one-time password; the browser reaches it only through this
module's WebSocket, which checks the console session (an admin's) and the page's origin
before it relays a byte. No VNC or WebSocket port is ever opened to the network.

noVNC itself is Debian's ``novnc`` package (``/usr/share/novnc``), served at ``/novnc``.
"""

import asyncio
import contextlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.websockets import WebSocketDisconnect

from cairn import logs
from cairn.errors import CairnError
from cairn.ops.virtualize import Running, virtualize
from cairn.web.auth import COOKIE, Auth
from cairn.web.overview import find_point, repository
from cairn.web.pages import Console, PageRoute, Refused, render
from cairn.web.users import Session

NOVNC = Path("/usr/share/novnc")
PIECE = 1 << 16


@dataclass
class VmSession:
    id: str
    point: str
    user: str
    stop: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)
    running: Running | None = None
    state: str = "starting"
    error: str = ""


class VirtualMachines:
    """The console's running VMs; each runs in its own thread until stopped."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._sessions: dict[str, VmSession] = {}
        self._lock = threading.Lock()

    def start(self, point_id: str, user: str) -> VmSession:
        session = VmSession(secrets.token_urlsafe(12), point_id, user)
        with self._lock:
            self._sessions[session.id] = session
        threading.Thread(target=self._run, args=(session,), daemon=True,
                         name="console-vm").start()
        return session

    def _run(self, session: VmSession) -> None:
        def started(run: Running) -> None:
            session.running, session.state = run, "running"

        try:
            with repository(self.console) as repo:
                virtualize(repo, find_point(repo, session.point).id, session.stop, started)
            session.state = "stopped"
        except CairnError as exc:
            session.state, session.error = "failed", str(exc)
        except Exception as exc:  # a bug: the page says so, the log keeps it
            session.state, session.error = "failed", f"internal error: {exc!r}"
        session.running = None
        logs.event("console.vm_stopped", point=session.point, state=session.state,
                   error=session.error)

    def find(self, vm_id: str) -> VmSession | None:
        return self._sessions.get(vm_id)

    def get(self, vm_id: str) -> VmSession:
        session = self.find(vm_id)
        if session is None:
            raise Refused(404, f"no virtual machine {vm_id!r}: it was never started here, or "
                               "the appliance restarted since")
        return session

    def all(self) -> list[VmSession]:
        return sorted(self._sessions.values(), key=lambda s: -s.started)


async def _relay(websocket: WebSocket, port: int) -> None:
    """Bytes both ways between the browser's WebSocket and the VM's loopback VNC port."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def upstream() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            writer.write(data)
            await writer.drain()

    async def downstream() -> None:
        while data := await reader.read(PIECE):
            await websocket.send_bytes(data)

    tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def router(console: Console, auth: Auth, vms: VirtualMachines) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Admin = Annotated[Session, Depends(auth.admin)]
    Change = Annotated[Session, Depends(auth.change)]

    @routes.post("/points/{point_id}/virtualize")
    def start(point_id: str, session: Change) -> RedirectResponse:
        with repository(console) as repo:
            point = find_point(repo, point_id)
        vm = vms.start(point.id, session.user.name)
        logs.event("console.vm_started", point=point.id, user=session.user.name)
        return RedirectResponse(f"/vms/{vm.id}", status_code=303)

    @routes.get("/vms/{vm_id}", response_class=HTMLResponse)
    def page(request: Request, vm_id: str, _: Admin) -> HTMLResponse:
        return render(request, "vm.html", vm=vms.get(vm_id), novnc=NOVNC.is_dir())

    @routes.post("/vms/{vm_id}/stop")
    def stop(vm_id: str, _: Change) -> RedirectResponse:
        vm = vms.get(vm_id)
        vm.stop.set()
        return RedirectResponse(f"/points/{vm.point}", status_code=303)

    @routes.websocket("/vms/{vm_id}/websockify")
    async def websockify(websocket: WebSocket, vm_id: str) -> None:
        token = websocket.cookies.get(COOKIE)
        session = console.users.session(token) if token else None
        origin = websocket.headers.get("origin", "")
        host = websocket.headers.get("host", "")
        vm = vms.find(vm_id)
        if (session is None or not session.user.admin or origin != f"https://{host}"
                or vm is None or vm.running is None):
            await websocket.close(code=1008)
            return
        offered = websocket.headers.get("sec-websocket-protocol", "")
        subprotocol = "binary" if "binary" in offered else None
        await websocket.accept(subprotocol=subprotocol)
        with contextlib.suppress(WebSocketDisconnect, ConnectionError, OSError):
            await _relay(websocket, vm.running.vnc_port)
        with contextlib.suppress(Exception):
            await websocket.close()

    return routes
