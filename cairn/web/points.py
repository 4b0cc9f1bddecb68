"""A point's page and what can be done to it: see its screen, verify, export, delete.

Every action calls the operation the CLI command calls (`ops.points.delete`,
`ops.restore.restore`, `screenshot_verify`, `PointReader`): the console adds pages, not
operations.
"""


from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, StreamingResponse

from cairn import logs, scratch
from cairn.appliance.tasks import Outcome
from cairn.ops.points import delete as delete_points
from cairn.ops.restore import FORMATS, restore
from cairn.ops.screenshot_verify import screenshot_verify
from cairn.store.reader import PointReader
from cairn.web.auth import Auth
from cairn.web.overview import find_point, machine_of, repository
from cairn.web.pages import Console, PageRoute, Refused, render
from cairn.web.users import Session

PIECE = 1 << 20
VERIFY_SECONDS = 120.0
CONVERT_PREFIX = "cairn-export-"
"""a point being converted for download, in the repository's folder (`scratch`)"""


def _raw(console: Console, point_id: str) -> Iterator[bytes]:
    with repository(console) as repo:
        point = find_point(repo, point_id)
        with PointReader(repo, point) as reader:
            for offset in range(0, point.size, PIECE):
                yield reader.pread(offset, min(PIECE, point.size - offset))


def _converted(console: Console, point_id: str, fmt: str) -> Iterator[bytes]:
    """The point as ``fmt``: qemu-img needs a seekable output, so it goes through a file."""
    with scratch.folder(CONVERT_PREFIX, console.repo_path) as folder:  # an image: not /tmp
        target = folder / f"image.{fmt}"
        with repository(console) as repo:
            restore(repo, find_point(repo, point_id).id, target, fmt)
        with target.open("rb") as f:
            while piece := f.read(PIECE):
                yield piece


def _verify(console: Console, point_id: str) -> str:
    with repository(console) as repo:
        record = screenshot_verify(repo, find_point(repo, point_id).id,
                                   timeout=VERIFY_SECONDS).record
    return f"{record.status}: {record.reason}"


def router(console: Console, auth: Auth) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Viewer = Annotated[Session, Depends(auth.session)]
    Change = Annotated[Session, Depends(auth.change)]

    @routes.get("/points/{point_id}", response_class=HTMLResponse)
    def point_page(request: Request, point_id: str, _: Viewer) -> HTMLResponse:
        with repository(console) as repo:
            point = find_point(repo, point_id)
            verification = repo.catalog.verifications().get(point.id)
            others = [p for p in reversed(repo.catalog.points(point.volume_id))
                      if p.id != point.id]
        return render(request, "point.html", point=point, verification=verification,
                      machine=machine_of(point), others=others, formats=FORMATS,
                      task=console.tasks.active(point.id))

    @routes.get("/points/{point_id}/screenshot.png")
    def screenshot(point_id: str, _: Viewer) -> FileResponse:
        with repository(console) as repo:
            point = find_point(repo, point_id)
            verification = repo.catalog.verifications().get(point.id)
        if verification is None or not Path(verification.screenshot).is_file():
            raise Refused(404, f"point {point_id} has no screenshot: verify it first")
        return FileResponse(verification.screenshot, media_type="image/png",
                            headers={"Cache-Control": "private, max-age=60"})

    @routes.get("/points/{point_id}/export/{fmt}")
    def export(point_id: str, fmt: str, _: Viewer) -> StreamingResponse:
        if fmt not in FORMATS:
            raise Refused(404, f"no export format {fmt!r}: choose {', '.join(FORMATS)}")
        with repository(console) as repo:
            point = find_point(repo, point_id)
        body = _raw(console, point.id) if fmt == "raw" else _converted(console, point.id, fmt)
        headers = {"Content-Disposition": f'attachment; filename="{point.id}.{fmt}"'}
        if fmt == "raw":
            headers["Content-Length"] = str(point.size)
        return StreamingResponse(body, media_type="application/octet-stream", headers=headers)

    @routes.post("/points/{point_id}/verify")
    def verify(point_id: str, session: Change) -> RedirectResponse:
        with repository(console) as repo:
            point = find_point(repo, point_id)
        console.tasks.start("screenshot-verify", point.id, session.user.name,
                            lambda _task: Outcome(_verify(console, point.id)),
                            link=f"/points/{point.id}")
        return RedirectResponse(f"/points/{point.id}", status_code=303)

    @routes.get("/points/{point_id}/delete", response_class=HTMLResponse)
    def confirm_delete(request: Request, point_id: str,
                       _: Annotated[Session, Depends(auth.admin)]) -> HTMLResponse:
        with repository(console) as repo:
            point = find_point(repo, point_id)
        return render(request, "delete.html", point=point)

    @routes.post("/points/{point_id}/delete")
    def delete(point_id: str, session: Change) -> RedirectResponse:
        with repository(console) as repo:
            point = find_point(repo, point_id)
            held = delete_points(repo, [point.id]).held_until
        logs.event("console.point_deleted", point=point.id, user=session.user.name,
                   held_until=held)
        machine = machine_of(point)
        return RedirectResponse(f"/machines/{machine}" if machine else "/", status_code=303)

    return routes
