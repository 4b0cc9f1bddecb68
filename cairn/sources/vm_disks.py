"""The disks of a running QEMU VM and the dirty bitmaps on them, as QMP reports them.

A disk is a guest device with a writable image inserted (CD-ROMs without media and
read-only images are not backed up). Its name is what the user called it on QEMU's command
line: the ``-drive`` id, else the ``-device`` id (from the qdev path
``/machine/peripheral/ID/...``), else the node name. Bitmaps are looked up on the node the
device writes to (``inserted.node-name``), which is where cairn adds its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from cairn.errors import SourceError
from cairn.sources.qmp import CommandFailed, Monitor

PREFIX = "cairn-"
_QDEV_ID = re.compile(r"^/machine/peripheral/([^/]+)/")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Bitmap:
    name: str
    recording: bool
    persistent: bool
    busy: bool
    inconsistent: bool
    count: int


@dataclass(frozen=True)
class Disk:
    name: str
    node: str
    size: int
    driver: str
    bitmaps: dict[str, Bitmap] = field(default_factory=dict)

    @property
    def persistent_bitmaps(self) -> bool:
        """qcow2 images keep bitmaps across a VM restart; others lose them at exit."""
        return self.driver == "qcow2"

    def ours(self) -> list[Bitmap]:
        return [b for n, b in self.bitmaps.items() if n.startswith(PREFIX)]


def check_qemu(monitor: Monitor) -> str:
    """QEMU's version, or a clear error when the monitor belongs to something else."""
    try:
        version = monitor.execute("query-version")
    except CommandFailed:
        version = None
    if not isinstance(version, dict) or "qemu" not in version:
        raise SourceError(f"{monitor.path} answers QMP but is not QEMU: give a QEMU VM's "
                          "-qmp socket")
    q = version["qemu"]
    return f"{q['major']}.{q['minor']}.{q['micro']}"


def _disk_name(block: dict[str, Any]) -> str:
    match = _QDEV_ID.match(block.get("qdev", ""))
    raw = block.get("device") or (match.group(1) if match else block["inserted"]["node-name"])
    return _SAFE.sub("_", raw).strip("._-") or "disk"


def _bitmaps(nodes: dict[str, dict[str, Any]], node: str) -> dict[str, Bitmap]:
    found: dict[str, Bitmap] = {}
    for raw in nodes.get(node, {}).get("dirty-bitmaps", []):
        if "name" in raw:
            found[raw["name"]] = Bitmap(raw["name"], raw.get("recording", True),
                                        raw.get("persistent", False), raw.get("busy", False),
                                        raw.get("inconsistent", False), raw.get("count", 0))
    return found


def list_disks(monitor: Monitor) -> list[Disk]:
    """The VM's writable disks in QEMU's order, with the bitmaps on each."""
    nodes = {n["node-name"]: n for n in monitor.execute("query-named-block-nodes",
                                                        {"flat": True})}
    disks = []
    for block in monitor.execute("query-block"):
        inserted = block.get("inserted")
        if not inserted or inserted.get("ro"):
            continue
        node = inserted["node-name"]
        disks.append(Disk(_disk_name(block), node, inserted["image"]["virtual-size"],
                          inserted["drv"], _bitmaps(nodes, node)))
    names = [d.name for d in disks]
    if len(set(names)) != len(names):
        disks = [Disk(f"{d.name}-{i}", d.node, d.size, d.driver, d.bitmaps)
                 for i, d in enumerate(disks)]
    return disks
