"""Booting a point from the console, with its screen in the page (noVNC).

The VM is one of the appliance's managed VMs (`cairn.virt.vms.VmManager`, the same manager
as the REST API's ``/api/v1/vms`` and `cairn vm`), started from the virtual machines page
(`cairn.web.cloud_vms`, where a point's "Virtualize" leads with the point chosen): it is
listed by `cairn vm list`, and outlives a restart of the appliance. Its VNC server listens
on loopback only, behind a one-time password; the browser reaches it only through this
module's WebSocket, which checks the console session (an admin's) and the page's origin
before it relays a byte. No VNC or WebSocket port is ever opened to the network.

noVNC itself is Debian's ``novnc`` package (``/usr/share/novnc``), served at ``/novnc``.
"""

import asyncio
import contextlib
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.websockets import WebSocketDisconnect

from cairn import logs
from cairn.virt.vms import LIVE, VmInfo, VmManager, VmNotFound
from cairn.web.auth import COOKIE, Auth
from cairn.web.pages import Console, PageRoute, Refused, render
from cairn.web.users import Session

NOVNC = Path("/usr/share/novnc")
PIECE = 1 << 16


def find_vm(vms: VmManager, name: str) -> VmInfo:
    try:
        return vms.get(name)
    except VmNotFound:
        raise Refused(404, f"no virtual machine {name!r}: it was stopped, or never started "
                           "(`cairn vm list` shows the running ones)") from None


def vnc_port(vm: VmInfo) -> int | None:
    """The loopback port of a running VM's screen."""
    return int(vm.vnc.rpartition(":")[2]) if vm.vnc else None


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


def router(console: Console, auth: Auth, vms: VmManager) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Admin = Annotated[Session, Depends(auth.admin)]
    Change = Annotated[Session, Depends(auth.change)]

    @routes.get("/vms/{name}", response_class=HTMLResponse)
    def page(request: Request, name: str, _: Admin) -> HTMLResponse:
        vm = find_vm(vms, name)
        password = vms.console(name).password if vm.vnc else ""
        return render(request, "vm.html", vm=vm, password=password, novnc=NOVNC.is_dir())

    @routes.post("/vms/{name}/stop")
    def stop(name: str, session: Change) -> RedirectResponse:
        """Power it off now and drop its clone, as `cairn virtualize` does when stopped."""
        vm = find_vm(vms, name)
        vms.stop(name, discard=True, timeout=0)
        logs.event("console.vm_stopped", vm=name, point=vm.point, user=session.user.name)
        back = f"/points/{vm.point}" if vm.origin == "local" else "/vms"
        return RedirectResponse(back, status_code=303)

    @routes.websocket("/vms/{name}/websockify")
    async def websockify(websocket: WebSocket, name: str) -> None:
        token = websocket.cookies.get(COOKIE)
        session = console.users.session(token) if token else None
        origin = websocket.headers.get("origin", "")
        host = websocket.headers.get("host", "")
        port = None
        with contextlib.suppress(Refused):
            port = vnc_port(find_vm(vms, name))
        if (session is None or not session.user.admin or origin != f"https://{host}"
                or port is None):
            await websocket.close(code=1008)
            return
        offered = websocket.headers.get("sec-websocket-protocol", "")
        subprotocol = "binary" if "binary" in offered else None
        await websocket.accept(subprotocol=subprotocol)
        with contextlib.suppress(WebSocketDisconnect, ConnectionError, OSError):
            await _relay(websocket, port)
        with contextlib.suppress(Exception):
            await websocket.close()

    return routes


def running(vms: VmManager) -> list[VmInfo]:
    """The VMs that are starting, running or stopping, newest first."""
    return sorted((vm for vm in vms.list() if vm.state in LIVE), key=lambda vm: -vm.created)
