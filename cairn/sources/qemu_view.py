"""A point-in-time view of every disk of a running VM, served by QEMU's own NBD server.

Fleecing (QEMU's ``docs/interop/live-block-operations``): each disk gets a temporary qcow2
overlay whose backing is the live disk, and a ``blockdev-backup sync=none`` job from the disk
into it. The job copies a cluster into the overlay just before the guest overwrites it, so
the overlay reads as the disk did at the instant the job started, while the guest runs on.
All disks start their jobs in one QMP ``transaction`` (one instant for the whole machine),
together with the dirty-bitmap hand-off:

* ``cairn-NEW`` is added (persistent on qcow2): it records every write after the instant;
* ``cairn-BASE`` (writes since the last point) is disabled: frozen at the instant, it is
  what the backup reads, exported beside the data as ``qemu:dirty-bitmap:cairn-BASE``.

Only after the point is committed does `PointInTimeView.close` remove ``cairn-BASE``. If the
backup fails, ``cairn-NEW`` is merged back into ``cairn-BASE``, which records again: no
write is forgotten. A backup killed outright leaves its nodes, jobs and exports behind;
`clear_leftovers` removes them, and `settle_bitmaps` then does the same merge, so the next
backup still sees every change.

Names cairn gives QEMU objects, so leftovers are recognisable: nodes and jobs
``cairn-fleeceN``, exports ``cairn-exportN``, bitmaps ``cairn-<machine point id>``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn import scratch
from cairn.errors import SourceError, ToolMissing
from cairn.sources.qmp import CommandFailed, Monitor
from cairn.sources.vm_disks import PREFIX, Disk, list_disks

FLEECE = "cairn-fleece"
EXPORT = "cairn-export"
WORKDIR_PREFIX = "cairn-qemu-"
EVENT_TIMEOUT = 30.0


def bitmap_name(machine_point_id: str) -> str:
    return PREFIX + machine_point_id


@dataclass
class Freeze:
    """Quiescing hooks around the transaction: ``freeze`` returns what it froze."""

    freeze: Callable[[], int]
    thaw: Callable[[], None]


@dataclass
class ViewDisk:
    disk: Disk
    index: int
    base: str | None
    """The bitmap of writes since the last point, read instead of the whole disk; None
    for a full read."""

    @property
    def node(self) -> str:
        return f"{FLEECE}{self.index}"

    @property
    def export_id(self) -> str:
        return f"{EXPORT}{self.index}"


@dataclass
class PointInTimeView:
    monitor: Monitor
    disks: list[ViewDisk]
    new_bitmap: str
    freeze: Freeze | None = None
    pause_seconds: float = 0.0
    frozen: int = 0
    workdir: Path = field(default_factory=lambda: scratch.make(WORKDIR_PREFIX))
    _started: list[str] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.workdir / "nbd.sock"

    def open(self) -> None:
        """Take the view; on any failure everything done so far is undone."""
        try:
            self._start_server()
            for d in self.disks:
                self._add_overlay(d)
            try:
                self._transaction()
            except CommandFailed as exc:
                raise SourceError(f"QEMU cannot take a point-in-time view of the disks "
                                  f"({exc.desc}): let the block jobs or exports that hold "
                                  "them finish, then back up again") from None
            for d in self.disks:
                self.monitor.execute("block-export-add", {
                    "type": "nbd", "id": d.export_id, "node-name": d.node,
                    "name": d.disk.name, "writable": False,
                    **({"bitmaps": [d.base]} if d.base else {})})
                self._started.append(d.export_id)
        except BaseException:
            self.close(committed=False)
            raise

    def _start_server(self) -> None:
        try:
            self.monitor.execute("nbd-server-start", {
                "addr": {"type": "unix", "data": {"path": str(self.socket)}}})
        except CommandFailed as exc:
            raise SourceError(f"QEMU at {self.monitor.path} cannot start its NBD server for "
                              f"the backup ({exc.desc}): another tool holds it; stop that "
                              "tool's export (nbd-server-stop) and back up again") from None
        self._started.append("server")

    def _add_overlay(self, d: ViewDisk) -> None:
        image = self.workdir / f"{d.node}.qcow2"
        try:
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image),
                            str(d.disk.size)], check=True, capture_output=True)
        except FileNotFoundError:
            raise ToolMissing("qemu-img", "qemu-utils") from None
        except subprocess.CalledProcessError as exc:
            raise SourceError(f"cannot make the fleecing overlay {image}: "
                              f"{exc.stderr.decode(errors='replace').strip()}") from None
        self.monitor.execute("blockdev-add", {
            "driver": "qcow2", "node-name": d.node, "backing": d.disk.node,
            "file": {"driver": "file", "filename": str(image)}})
        self._started.append(d.node)

    def _transaction(self) -> None:
        actions: list[dict[str, Any]] = []
        for d in self.disks:
            node = d.disk.node
            actions.append(_action("block-dirty-bitmap-add", node=node, name=self.new_bitmap,
                                   persistent=d.disk.persistent_bitmaps))
            if d.base:
                actions.append(_action("block-dirty-bitmap-disable", node=node, name=d.base))
            actions.append(_action("blockdev-backup", **{
                "job-id": d.node, "device": node, "target": d.node, "sync": "none"}))
        started = time.monotonic()
        if self.freeze is not None:
            self.frozen = self.freeze.freeze()
        try:
            self.monitor.execute("transaction", {"actions": actions})
        finally:
            if self.freeze is not None:
                self.freeze.thaw()
            self.pause_seconds = time.monotonic() - started
        self._started.append("transaction")

    def close(self, committed: bool) -> None:
        """Release the view, then hand the bitmaps over (see the module docstring)."""
        started, self._started = self._started, []
        for d in self.disks:
            if d.export_id in started:
                _delete_export(self.monitor, d.export_id)
        if "server" in started:
            with contextlib.suppress(CommandFailed):
                self.monitor.execute("nbd-server-stop")
        if "transaction" in started:
            for d in self.disks:
                _cancel_job(self.monitor, d.node)
        for d in self.disks:
            if d.node in started:
                self.monitor.execute("blockdev-del", {"node-name": d.node})
        shutil.rmtree(self.workdir, ignore_errors=True)
        if "transaction" in started:
            for d in self.disks:
                self._hand_over(d, committed)

    def _hand_over(self, d: ViewDisk, committed: bool) -> None:
        node = d.disk.node
        if committed:
            actions = [_action("block-dirty-bitmap-remove", node=node, name=d.base)
                       ] if d.base else []
        elif d.base:
            actions = [_action("block-dirty-bitmap-merge", node=node, target=d.base,
                               bitmaps=[self.new_bitmap]),
                       _action("block-dirty-bitmap-enable", node=node, name=d.base),
                       _action("block-dirty-bitmap-remove", node=node, name=self.new_bitmap)]
        else:
            actions = [_action("block-dirty-bitmap-remove", node=node, name=self.new_bitmap)]
        if actions:
            self.monitor.execute("transaction", {"actions": actions})


def _action(kind: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, "data": data}


def _delete_export(monitor: Monitor, export_id: str) -> None:
    monitor.execute("block-export-del", {"id": export_id, "mode": "hard"})
    monitor.wait_event("BLOCK_EXPORT_DELETED", lambda e: e.get("id") == export_id,
                       EVENT_TIMEOUT)


def _cancel_job(monitor: Monitor, job: str) -> None:
    try:
        monitor.execute("block-job-cancel", {"device": job, "force": True})
    except CommandFailed:
        return  # already gone
    monitor.wait_event("BLOCK_JOB_CANCELLED", lambda e: e.get("device") == job, EVENT_TIMEOUT)


def clear_leftovers(monitor: Monitor) -> bool:
    """Remove what a killed backup left in QEMU (exports, NBD server, jobs, overlays).

    Returns whether anything was found. The NBD server is stopped only when cairn's own
    exports or overlays show that the server is cairn's.
    """
    exports = [e["id"] for e in monitor.execute("query-block-exports")
               if e["id"].startswith(EXPORT)]
    jobs = [j["device"] for j in monitor.execute("query-block-jobs")
            if j["device"].startswith(FLEECE)]
    nodes = {n["node-name"]: _image_file(n.get("file", "")) for n in
             monitor.execute("query-named-block-nodes", {"flat": True})
             if n["node-name"].startswith(FLEECE)}
    for export in exports:
        _delete_export(monitor, export)
    if exports or jobs or nodes:
        with contextlib.suppress(CommandFailed):
            monitor.execute("nbd-server-stop")
    for job in jobs:
        _cancel_job(monitor, job)
    for node, image in nodes.items():
        monitor.execute("blockdev-del", {"node-name": node})
        folder = Path(image).parent
        if folder.name.startswith(WORKDIR_PREFIX):
            shutil.rmtree(folder, ignore_errors=True)
    return bool(exports or jobs or nodes)


def _image_file(name: str) -> str:
    """The overlay's own file from QEMU's name for its node. A node opened with a backing
    node is named ``json:{...}`` (the options, the overlay's file among them), not by its
    file's path: read as a path, the killed backup's folder would never be found."""
    if not name.startswith("json:"):
        return name
    with contextlib.suppress(ValueError, TypeError, KeyError):
        return str(json.loads(name[len("json:"):])["file"]["filename"])
    return name


def settle_bitmaps(monitor: Monitor, keep: str | None) -> list[Disk]:
    """Leave on each disk at most ``keep``, recording, holding every write since its point.

    A backup killed before its point committed left ``keep`` disabled and a newer cairn
    bitmap recording: merge that back in. Every other cairn bitmap is stale (a point that
    was deleted, a view that was committed but not handed over) and goes. A cairn bitmap
    another job is using (busy) stops the backup before anything changes.
    """
    disks = list_disks(monitor)
    for disk in disks:
        busy = [b.name for b in disk.ours() if b.busy]
        if busy:
            raise SourceError(f"bitmap {busy[0]} on disk {disk.name} is in use by another "
                              "job or export (another backup tool?): let it finish, or "
                              "remove it with block-dirty-bitmap-remove, then back up again")
    for disk in disks:
        base = disk.bitmaps.get(keep) if keep else None
        if base is not None and base.inconsistent:
            base = None  # unusable: QEMU may have missed writes; it goes with the rest
        others = [b for b in disk.ours() if base is None or b.name != base.name]
        actions: list[dict[str, Any]] = []
        newer = [b.name for b in others if b.recording]
        if base is not None and not base.recording:
            if newer:
                actions.append(_action("block-dirty-bitmap-merge", node=disk.node,
                                       target=base.name, bitmaps=newer))
            actions.append(_action("block-dirty-bitmap-enable", node=disk.node, name=base.name))
        actions += [_action("block-dirty-bitmap-remove", node=disk.node, name=b.name)
                    for b in others]
        if actions:
            monitor.execute("transaction", {"actions": actions})
    return list_disks(monitor) if any(d.ours() for d in disks) else disks


def remove_bitmap(monitor: Monitor, disk: Disk, name: str) -> None:
    monitor.execute("block-dirty-bitmap-remove", {"node": disk.node, "name": name})

