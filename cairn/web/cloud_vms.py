"""The console's page of virtual machines: those the appliance runs, and starting one from a
point of the appliance's repository or of a cloud repository (on this node, reading its
blocks on demand), with the options of `cairn vm start`; a point page's "Virtualize" opens
the form with that point of the appliance's repository chosen.

The cloud repository is one of the appliance's offsite targets (with the endpoint its policy
names, opened with the appliance's own key, so the admin pastes nothing) or another one given
by URL, endpoint and key. Its points are listed from the bucket, one is chosen with the same
options as `cairn vm start`, and the VM is started by the one `VmManager` the REST API and
`cairn vm` use (`cairn.virt.vms`): the same checks, the same record, listed by
`cairn vm list`. A refusal (a wrong key, an endpoint that does not answer, a point the bucket
lacks) is shown on this page in one line, with what was typed kept, and nothing is kept on
the appliance. The key travels only in POST bodies (never in a URL) and is kept only with
a VM that starts.
"""

import contextlib
import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from cairn import logs
from cairn.appliance import space
from cairn.errors import CairnError
from cairn.store.catalog import RecoveryPoint
from cairn.virt.vms import VmManager, VmRequest
from cairn.web.auth import Auth
from cairn.web.pages import Console, PageRoute, render, status_of
from cairn.web.users import Session

OTHER = "other"
"""the repository choice that takes the URL and endpoint typed in"""
LOCAL = "local"
"""the repository choice of the appliance's own repository"""


class CloudForm(BaseModel):
    """What the admin chose: ``repo`` an offsite target's URL or `OTHER` (then ``other`` and
    ``endpoint`` as typed), and a key's line (empty: the appliance's own key)."""

    repo: str = Field(default="", max_length=1000)
    other: str = Field(default="", max_length=1000)
    endpoint: str = Field(default="", max_length=300)
    key: str = Field(default="", max_length=200)

    def request(self, targets: list[space.Target], **options: Any) -> VmRequest:
        """The `VmRequest` of this choice; an offsite target's endpoint is its policy's."""
        url, endpoint = self.other.strip(), self.endpoint.strip()
        target = next((t for t in targets if t.url == self.repo), None)
        if target is not None:
            url, endpoint = target.url, target.endpoint or ""
        elif self.repo == LOCAL:
            url = endpoint = ""
        return VmRequest(options.pop("source", ""), repo=url or None,
                         endpoint=endpoint or None, key=self.key.strip() or None, **options)


class StartForm(CloudForm):
    """A point of the chosen repository and the options of `cairn vm start`."""

    source: str = Field(max_length=300)
    name: str = Field(default="", max_length=63)
    cpus: int = Field(default=2, ge=1, le=64)
    memory: int = Field(default=2048, ge=64, le=1 << 20)
    networks: str = Field(default="", max_length=1000)
    firmware: Literal["auto", "bios", "uefi"] = "auto"
    disk_bus: Literal["auto", "virtio", "sata", "ide"] = "auto"

    def vm_request(self, targets: list[space.Target]) -> VmRequest:
        return self.request(targets, source=self.source.strip(),
                            name=self.name.strip() or f"vm-{secrets.token_hex(3)}",
                            cpus=self.cpus, memory_mib=self.memory,
                            networks=_networks(self.networks), firmware=self.firmware,
                            disk_bus=self.disk_bus)


def _networks(text: str) -> list[str]:
    """One network per line (``nat,hostfwd=...`` holds commas); ``none`` lines add nothing."""
    return [line.strip() for line in text.splitlines() if line.strip() not in ("", "none")]


def router(console: Console, auth: Auth, vms: VmManager) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Admin = Annotated[Session, Depends(auth.admin)]
    Change = Annotated[Session, Depends(auth.change)]

    def page(request: Request, form: CloudForm, points: list[RecoveryPoint] | None = None,
             error: CairnError | None = None) -> HTMLResponse:
        return render(request, "vms.html", 200 if error is None else status_of(error),
                      vms=sorted(vms.list(), key=lambda vm: -vm.created),
                      targets=space.targets(console.state), form=form, points=points,
                      message=str(error) if error else None, other=OTHER, local=LOCAL)

    @routes.get("/vms", response_class=HTMLResponse)
    def show(request: Request, _: Admin, point: str = "") -> HTMLResponse:
        """The page; ``point`` (a point page's "Virtualize"): the start form of the
        appliance's points, that one chosen."""
        if point:
            form = StartForm(repo=LOCAL, source=point[:300])
            return page(request, form, vms.points(form.request([])))
        targets = space.targets(console.state)
        return page(request, CloudForm(repo=targets[0].url if targets else LOCAL))

    @routes.post("/vms/cloud", response_class=HTMLResponse)
    def list_points(request: Request, _: Change,
                    form: Annotated[CloudForm, Form()]) -> HTMLResponse:
        """The chosen repository's points (a cloud one's read from the bucket), to choose
        one."""
        try:
            points = vms.points(form.request(space.targets(console.state)))
        except CairnError as exc:
            return page(request, form, error=exc)
        return page(request, form, points)

    @routes.post("/vms/start")
    def start(request: Request, session: Change, form: Annotated[StartForm, Form()]) -> Response:
        """Start the VM (this waits until QEMU runs) and show its page."""
        targets = space.targets(console.state)
        try:
            vm = vms.start(form.vm_request(targets))
        except CairnError as exc:
            points = None
            with contextlib.suppress(CairnError):  # to choose again without listing again
                points = vms.points(form.request(targets))
            return page(request, form, points, exc)
        logs.event("console.vm_started", point=vm.point, origin=vm.origin, vm=vm.name,
                   user=session.user.name)
        return RedirectResponse(f"/vms/{vm.name}", status_code=303)

    return routes
