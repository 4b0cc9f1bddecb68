"""Screenshot verification: boot a throwaway clone of a point with no network, judge its
screen (`virt.screenshot.verify_boot`), and keep the verdict beside the point.

One implementation for `cairn screenshot-verify`, the web console's "verify" and the
appliance's scheduled checks. The screenshot is kept as ``REPO/verifications/<point>.png``
and the verdict in the catalog, where `points` and the console show it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cairn.ops.machine_points import boot_disks
from cairn.store.catalog import RecoveryPoint, Verification
from cairn.store.repository import Repository
from cairn.virt.boot import disk_bus, exported_clones
from cairn.virt.screenshot import verify_boot


@dataclass(frozen=True)
class BootCheck:
    """The point checked, its recorded verdict, and the accelerator the VM ran under."""

    point: RecoveryPoint
    record: Verification
    accel: str

    @property
    def booted(self) -> bool:
        return self.record.status == "booted"


def screenshot_verify(repo: Repository, ref: str, expect_text: str | None = None,
                      timeout: float = 120.0, out: Path | None = None,
                      more: Sequence[str] = ()) -> BootCheck:
    """Boot the point ``ref`` names on a throwaway clone and record the verdict; ``out``
    also gets the screenshot. Without ``expect_text`` a login screen counts as booted.

    The machine boots as it would after a restore, with every disk it mounts: a machine
    point (or the boot disk's point of one) boots all its disks in order, and ``more``
    names the points of the other disks explicitly (the scheduler's choice when the point
    has no machine point). Each disk is a throwaway clone of its own. The verdict is
    recorded with the boot disk's point and says how many disks QEMU had attached.
    """
    points = ([repo.resolve(ref), *(repo.resolve(r) for r in more)] if more
              else list(boot_disks(repo, ref).points))
    point = points[0]
    folder = repo.path / "verifications"
    folder.mkdir(exist_ok=True)
    shot = folder / f"{point.id}.png"
    with exported_clones(repo, points) as exports:
        urls = [e.url for e in exports]
        verdict = verify_boot(urls[0], more_drives=tuple(urls[1:]), out=shot,
                              expect_text=expect_text, timeout=timeout, snapshot=False,
                              drive_format="raw", interface=disk_bus(len(urls)))
    if out is not None and shot.exists():
        out.write_bytes(shot.read_bytes())
    reason = verdict.reason + (f" (booted with {verdict.disks} disks)" if len(points) > 1
                               else "")
    record = Verification(point.id, verdict.status, reason, verdict.ocr_text,
                          str(shot) if shot.exists() else "", round(verdict.seconds, 2),
                          time.time())
    repo.catalog.record_verification(record)
    return BootCheck(point, record, verdict.accel)
