"""Ransomware detection after every new point, the same for the CLI, the appliance and agents.

`after_backup` runs `cairn.insights.ransomware.examine` on the new point; a flagged point
is kept by retention (`marks.keep_reasons`), shows in `cairn points`, and raises a critical
``ransomware`` alert through the appliance's alerts (delivered by webhook and e-mail when
the appliance runs). Detection never fails a backup: an error is logged as an event.

A point backed up straight into a cloud repository is examined too (its flag goes to the
bucket's marks, so every node and the cloud's retention see it); the file scan then reads
the changed files' blocks back from the bucket, the price of knowing. Points *replicated*
to a cloud were examined where they were made and carry their flag with them. No alert is
raised for a cloud repository: alerts live in an appliance's local repository, and the
cloud's cache folder is none.
"""

from __future__ import annotations

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
        from cairn.alerts import raise_alert  # a flagged point only: most backups never alert

        raise_alert(repo.path, "ransomware",
                    f"point {point.id} of {point.volume} looks like ransomware at work: "
                    f"{'; '.join(finding.reasons)}: check the machine now; the point and "
                    "the ones before it are kept", machine=machine, subject=point.id,
                    severity="critical")
    return finding
