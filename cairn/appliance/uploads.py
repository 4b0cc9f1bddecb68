"""What the appliance does for an agent's upload: open or resume, take frames, commit.

A machine's volume ``sda`` is stored as the repository volume ``<machine>.<volume>``
(machine names hold no dot), so machines never collide and a token's machine name is all
it takes to scope every store access. A commit runs `Ingest` over a `SpoolSource`: the
point becomes visible only when every range the agent lists has arrived, in one catalog
commit; anything less is refused and the upload stays open for the agent to finish.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cairn import logs
from cairn.appliance import metrics
from cairn.appliance.errors import Conflict, Forbidden, NotFound
from cairn.appliance.intake import Intake
from cairn.appliance.senders import Senders
from cairn.appliance.spool import Spool, SpoolSource, coalesce, uncovered
from cairn.appliance.state import Machine, State, Upload
from cairn.errors import UsageError
from cairn.plan import Ranges
from cairn.store.ingest import Ingest
from cairn.store.reader import PointReader
from cairn.store.repository import Repository

RESUME_PAGE = 10_000
"""Frame records per resume reply (about 1 MB of JSON)."""


def store_volume(machine: str, volume: str) -> str:
    return f"{machine}.{volume}"


class Uploads:
    def __init__(self, repo_path: Path, state: State, max_bodies: int = 16) -> None:
        """``max_bodies``: upload bodies read at once across all machines (`Senders`)."""
        self.repo_path = repo_path
        self.state = state
        self.senders = Senders(max_bodies)
        self.spool_dir = repo_path / "spool"
        self._commit_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _own(self, machine: Machine, upload_id: str) -> Upload:
        upload = self.state.upload(upload_id)
        if upload is None:
            raise NotFound(f"no upload {upload_id!r}: open one with POST /api/v1/agent/uploads")
        if upload.machine_id != machine.id:
            raise Forbidden(f"upload {upload_id} belongs to another machine")
        return upload

    def open(self, machine: Machine, volume: str, size: int) -> dict[str, Any]:
        if volume not in dict(self.state.volumes(machine.id)):
            raise NotFound(f"volume {volume!r} is not protected on {machine.name}: run "
                           "`cairn agent protect` first")
        self.state.register_volume(machine.id, volume, size)
        upload, stale = self.state.open_upload(machine.id, volume, size)
        for upload_id in stale:
            Spool.remove(self.spool_dir, upload_id)
        with Repository.open(self.repo_path) as repo:
            vol = repo.catalog.volume(store_volume(machine.name, volume))
            parent = repo.catalog.latest(vol.id) if vol is not None else None
            block_size = repo.block_size
            keyed = repo.config.key_id is not None
        return {
            "upload": upload.id,
            "block_size": block_size,
            "parent": None if parent is None else {"id": parent.id, "size": parent.size},
            "parent_hashes": parent is not None and not keyed,
            **self.received(machine, upload.id),
        }

    def received(self, machine: Machine, upload_id: str, after: int = -1,
                 limit: int = RESUME_PAGE) -> dict[str, Any]:
        """A page of the frames held, ``[offset, length, hash]`` each, and the offset to
        ask the next page after (None at the end): a reply stays under RESUME_PAGE
        records however large the volume."""
        upload = self._own(machine, upload_id)
        rows = self.state.received(upload.id, after, min(limit, RESUME_PAGE))
        more = len(rows) == min(limit, RESUME_PAGE)
        return {"received": [[o, n, h.hex()] for o, n, h in rows],
                "received_next": rows[-1][0] if more else None}

    def intake(self, machine: Machine, upload_id: str) -> Intake:
        """Where one body of frames for an open upload goes (the caller closes it)."""
        upload = self._own(machine, upload_id)
        if upload.state != "open":
            raise Conflict(f"upload {upload_id} is {upload.state}: open a new one")
        return Intake(self.state, Spool(self.spool_dir, upload.id, upload.size), machine,
                      upload)

    def parent_hashes(self, machine: Machine, upload_id: str) -> bytes:
        """The parent point's block hashes, 32 bytes each, `ZERO` for holes."""
        upload = self._own(machine, upload_id)
        with Repository.open(self.repo_path) as repo:
            if repo.config.key_id is not None:
                raise Conflict("this repository hashes blocks with a key: agents cannot "
                               "compare against it; do a full upload")
            vol = repo.catalog.volume(store_volume(machine.name, upload.volume))
            parent = repo.catalog.latest(vol.id) if vol is not None else None
            if parent is None:
                raise NotFound(f"volume {upload.volume} has no point yet: do a full upload")
            with PointReader(repo, parent) as reader:
                return b"".join(h for _, h in reader.block_hashes())

    def commit(self, machine: Machine, upload_id: str, plan: Sequence[tuple[int, int]],
               full: bool) -> dict[str, Any]:
        """``plan``: the ranges the upload changes (a `Ranges` comes sorted)."""
        upload = self._own(machine, upload_id)
        with self._guard:
            lock = self._commit_locks.setdefault(upload_id, threading.Lock())
        with lock:
            upload = self._own(machine, upload_id)
            if upload.state == "committed":
                return {"point": upload.point, "bytes_stored": upload.bytes_stored}
            if upload.state != "open":
                raise Conflict(f"upload {upload_id} is {upload.state}: open a new one")
            for offset, length in plan:
                if offset < 0 or length <= 0 or offset + length > upload.size:
                    raise UsageError(f"range {offset}+{length} lies outside the volume "
                                     f"(size {upload.size})")
            wanted = Ranges.merged(plan if isinstance(plan, Ranges) else sorted(plan))
            first, absent = None, 0
            for offset, length in uncovered(wanted, coalesce(
                    self.state.received_ranges(upload.id))):
                first, absent = offset if first is None else first, absent + length
            if absent:
                raise Conflict(f"{absent} bytes of the listed ranges have not arrived (first "
                               f"at offset {first}): send them, then commit again")
            result = self._ingest(machine, upload, wanted, full)
        with self._guard:
            self._commit_locks.pop(upload_id, None)
        return result

    def _ingest(self, machine: Machine, upload: Upload, wanted: Ranges,
                full: bool) -> dict[str, Any]:
        started = time.monotonic()
        name = store_volume(machine.name, upload.volume)
        with Repository.open(self.repo_path) as repo, \
                Spool(self.spool_dir, upload.id, upload.size) as spool:
            vol = repo.catalog.volume(name)
            parent = repo.catalog.latest(vol.id) if vol is not None else None
            if not full and parent is None:
                raise Conflict(f"volume {upload.volume} has no point yet: the first upload "
                               "must be full")
            with (contextlib.nullcontext() if full or parent is None
                  else PointReader(repo, parent)) as reader:
                source = SpoolSource(spool, upload.size, wanted, reader, f"agent:{machine.name}")
                point = Ingest(repo, name, source, origin=f"upload:{upload.id}").run(
                    None if full else wanted)
        self.state.commit_upload(upload.id, point.id, point.bytes_stored)
        Spool.remove(self.spool_dir, upload.id)
        seconds = time.monotonic() - started
        metrics.add("cairn_upload_commits_total")
        metrics.add("cairn_upload_commit_seconds_total", seconds)
        logs.event("point.committed", machine=machine.name, volume=upload.volume,
                   point=point.id, bytes_read=point.bytes_read, stored=point.bytes_stored,
                   seconds=round(seconds, 3))
        return {"point": point.id, "bytes_stored": point.bytes_stored}

