"""Ransomware detection after every new point, the same for the CLI, the appliance and agents.

`after_backup` runs `cairn.insights.ransomware.examine` on the new point; a flagged point
is kept by retention (`marks.keep_reasons`), shows in `cairn points`, and raises a critical
``ransomware`` alert through the appliance's alerts (delivered by webhook and e-mail when
the appliance runs). Detection never fails a backup: an error is logged as an event.

A point backed up straight into a cloud repository is examined too (its flag goes to the
bucket's marks, so every node and the cloud's retention see it); the file scan then reads
the changed files' blocks back from the bucket, the price of knowing. Points *replicated*
to a cloud were examined where they were made and carry their flag with them. Alerts live
in an appliance's local repository, which a cloud's cache folder is not: the appliance
raises the same alert for a flagged point it finds in a bucket it replicates to and did
not make itself (`alert_cloud_flags`, after each offsite run), once per point.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cairn import logs
from cairn.errors import CairnError
from cairn.insights.ransomware import Finding, examine
from cairn.store.catalog import RecoveryPoint
from cairn.store.repository import Repository


def after_backup(repo: Repository, point: RecoveryPoint, machine: str = "") -> Finding | None:
    try:
        finding = examine(repo, point)
    except CairnError as e:
        logs.event("ransomware.check_failed", point=point.id, error=str(e))
        return None
    logs.event("ransomware.checked", point=point.id, changed_blocks=finding.changed_blocks,
               turned_incompressible=finding.turned_blocks, scanned=finding.scanned,
               flagged=bool(finding.reasons), seconds=round(finding.seconds, 4))
    if finding.reasons and repo.remote is None:
        alert_flagged(repo.path, point, finding.reasons, machine)
    return finding


def alert_flagged(appliance: Path, point: RecoveryPoint, reasons: Sequence[str],
                  machine: str = "", where: str = "") -> None:
    """The one alert of a flagged point, however it was made (``where``: the cloud
    repository it is in, when not in ``appliance``'s own)."""
    from cairn.alerts import raise_alert  # a flagged point only: most backups never alert

    place = f" in {where}" if where else ""
    raise_alert(appliance, "ransomware",
                f"point {point.id} of {point.volume}{place} looks like ransomware at work: "
                f"{'; '.join(reasons)}: check the machine now; the point and the ones "
                "before it are kept", machine=machine, subject=point.id, severity="critical")


def alert_cloud_flags(appliance: Path, flagged: Sequence[tuple[RecoveryPoint, Sequence[str]]],
                      where: str) -> int:
    """Alert, once per point ever, the flagged points of a cloud repository that
    ``appliance`` did not make (a backup straight into the bucket, by any node); how many
    alerts were raised."""
    if not flagged:
        return 0
    from cairn.alerts import AlertStore

    store = AlertStore(appliance / "appliance.db")
    try:
        told = {a.subject for a in store.alerts(include_resolved=True, kind="ransomware")}
    finally:
        store.close()
    new = [(p, reasons) for p, reasons in flagged if p.id not in told]
    for point, reasons in new:
        alert_flagged(appliance, point, reasons, where=where)
    return len(new)
