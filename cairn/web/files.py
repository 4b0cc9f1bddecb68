"""Files inside a point: browse its folders, download a file or a folder (as a tar archive),
and compare two points, all through `cairn.insights` (what `cairn ls`, `cat` and `diff` use).

Paths use the CLI's ``[PART:]/path`` syntax (`cairn.insights.paths`), so what the address
bar shows can be typed into `cairn cat`. Downloads stream: a file is read piece by piece, and
a folder's archive is written by a thread into a pipe the response reads from, so neither
is ever held whole in memory.
"""

import os
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, BinaryIO
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from cairn.errors import PathNotFound
from cairn.insights import paths
from cairn.insights.disk import Volume
from cairn.insights.fs import DIR, FILE, SYMLINK, Entry, FileSystem
from cairn.insights.points import diff_points, open_point
from cairn.web.auth import Auth
from cairn.web.overview import find_point, machine_of, repository
from cairn.web.pages import Console, PageRoute, render
from cairn.web.users import Session

PIECE = 1 << 20
PAGE = 1000
"""Entries per page of a folder: a page of a 10,000-file folder stays quick to render."""


@contextmanager
def _opened(console: Console, point_id: str, spec: str
            ) -> Iterator[tuple[list[Volume], FileSystem, paths.Location, Entry]]:
    """The point's volumes, the file system ``spec`` names, and the entry at its path."""
    with repository(console) as repo:
        point = find_point(repo, point_id)
        with open_point(repo, point) as volumes:
            location = paths.parse(spec)
            _, fs = paths.select(volumes, location)
            yield volumes, fs, location, fs.stat(location.path)


def _entry_of_kind(console: Console, point_id: str, spec: str, kind: str, noun: str) -> Entry:
    """The entry at ``spec``, which must be of ``kind``: a download asked of a folder (or
    an archive of a file) is a missing thing, said with what is really there."""
    with _opened(console, point_id, spec) as (volumes, _fs, location, entry):
        shown = location.show(volumes)
    if entry.kind != kind:
        raise PathNotFound(f"{shown} (a {entry.kind}, not {noun})")
    return entry


def _file_pieces(console: Console, point_id: str, spec: str) -> Iterator[bytes]:
    with _opened(console, point_id, spec) as (_, fs, location, _entry), \
            fs.open(location.path) as f:
        while piece := f.read(PIECE):
            yield piece


def _add(tar: tarfile.TarFile, fs: FileSystem, entry: Entry, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.mode = entry.permissions
    info.uid, info.gid = entry.uid or 0, entry.gid or 0
    info.mtime = (entry.mtime or 0) // 1_000_000_000
    if entry.kind == DIR:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif entry.kind == SYMLINK:
        info.type, info.linkname = tarfile.SYMTYPE, entry.link_target or ""
        tar.addfile(info)
    elif entry.kind == FILE:
        info.size = entry.size
        with fs.open(entry.path) as f:
            tar.addfile(info, f)


def _write_archive(console: Console, point_id: str, spec: str, out: BinaryIO) -> None:
    with _opened(console, point_id, spec) as (_, fs, location, top), \
            tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        base = top.name or "root"
        _add(tar, fs, top, base)
        cut = len(location.path.rstrip("/"))
        for entry in fs.walk(location.path):
            _add(tar, fs, entry, base + entry.path[cut:])


def _archive_pieces(console: Console, point_id: str, spec: str) -> Iterator[bytes]:
    """The folder as a tar stream; a client that goes away stops the writer (broken pipe)."""
    read_fd, write_fd = os.pipe()

    def produce() -> None:
        with os.fdopen(write_fd, "wb") as out:
            try:
                _write_archive(console, point_id, spec, out)
            except (BrokenPipeError, OSError):
                return

    writer = threading.Thread(target=produce, daemon=True, name="console-archive")
    writer.start()
    with os.fdopen(read_fd, "rb") as stream:
        while piece := stream.read(PIECE):
            yield piece
    writer.join()


def _crumbs(volumes: list[Volume], location: paths.Location) -> list[tuple[str, str]]:
    """(name, spec) of each folder from the root down to ``location``."""
    parts = [p for p in location.path.split("/") if p]
    out = [("/", paths.display(volumes, location.partition, "/"))]
    for i, name in enumerate(parts):
        out.append((name, paths.display(volumes, location.partition,
                                        "/" + "/".join(parts[: i + 1]))))
    return out


@dataclass(frozen=True)
class Listing:
    """A folder as its page shows it: entries beside the ``[PART:]/path`` each links to."""

    crumbs: list[tuple[str, str]]
    rows: list[tuple[Entry, str]]


class Listings:
    """Recently listed folders. A point never changes, so a listing never goes stale: the
    second look at a big folder costs only the page."""

    def __init__(self, capacity: int = 32) -> None:
        self._items: OrderedDict[tuple[str, str], Listing] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> Listing | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
            return self._items.get(key)

    def put(self, key: tuple[str, str], listing: Listing) -> None:
        with self._lock:
            self._items[key] = listing
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


def _listing(console: Console, point_id: str, spec: str) -> Listing | None:
    """The folder ``spec`` names; None when it names something else than a folder."""
    with _opened(console, point_id, spec) as (volumes, fs, location, entry):
        if entry.kind != DIR:
            return None
        entries = fs.list(location.path)
        prefix = paths.display(volumes, location.partition, "/")[:-1]
        return Listing(_crumbs(volumes, location), [(e, prefix + e.path) for e in entries])


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}"}


def router(console: Console, auth: Auth) -> APIRouter:
    routes = APIRouter(route_class=PageRoute, include_in_schema=False)
    Viewer = Annotated[Session, Depends(auth.session)]
    Spec = Annotated[str, Query(max_length=4096)]
    listings = Listings()

    @routes.get("/points/{point_id}/files", response_class=HTMLResponse)
    def browse(request: Request, point_id: str, _: Viewer, path: Spec = "",
               page: Annotated[int, Query(ge=1, le=1_000_000)] = 1) -> Response:
        if not path:
            with repository(console) as repo:
                point = find_point(repo, point_id)
                with open_point(repo, point) as volumes:
                    one = paths.single(volumes)
                    if one is not None:
                        return RedirectResponse(f"/points/{point.id}/files?path=/",
                                                status_code=303)
                    return render(request, "partitions.html", point=point, volumes=volumes,
                                  machine=machine_of(point))
        listing = listings.get((point_id, path))
        if listing is None:
            listing = _listing(console, point_id, path)
            if listing is None:
                return RedirectResponse(f"/points/{point_id}/file?path={quote(path)}",
                                        status_code=303)
            listings.put((point_id, path), listing)
        first = (page - 1) * PAGE
        return render(request, "files.html", point_id=point_id, spec=path,
                      crumbs=listing.crumbs, rows=listing.rows[first:first + PAGE],
                      page=page, first=first, total=len(listing.rows), per_page=PAGE)

    @routes.get("/points/{point_id}/file")
    def download(point_id: str, _: Viewer, path: Spec) -> StreamingResponse:
        entry = _entry_of_kind(console, point_id, path, FILE, "a regular file")
        return StreamingResponse(_file_pieces(console, point_id, path),
                                 media_type="application/octet-stream",
                                 headers={**_attachment(entry.name),
                                          "Content-Length": str(entry.size)})

    @routes.get("/points/{point_id}/archive")
    def archive(point_id: str, _: Viewer, path: Spec) -> StreamingResponse:
        entry = _entry_of_kind(console, point_id, path, DIR, "a folder")
        return StreamingResponse(_archive_pieces(console, point_id, path),
                                 media_type="application/x-tar",
                                 headers=_attachment(f"{entry.name or 'root'}.tar"))

    @routes.get("/points/{point_id}/compare", response_class=HTMLResponse)
    def compare(request: Request, point_id: str, _: Viewer,
                other: Annotated[str, Query(alias="with", max_length=200)]) -> HTMLResponse:
        with repository(console) as repo:
            a, b = sorted((find_point(repo, point_id), find_point(repo, other)),
                          key=lambda p: (p.created, p.seq))
            results = diff_points(repo, a, b)
        return render(request, "compare.html", a=a, b=b, results=results,
                      machine=machine_of(b))

    return routes
