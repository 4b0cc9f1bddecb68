"""Cloud retention independent of local retention: 30 days of hourly points, clock injected.

Why: issue 16 promises that the cloud keeps its own retention and the next replication
never undoes it (the bug was: `prune` on the cloud, then `replicate` sent everything again),
and that local and cloud retention are independent. This drives the appliance's own
decisions hour by hour over 30 simulated days, with no waiting: a new local point each
hour, local retention (`store.retention.select`), the offsite choice of what to send
(`replication.selection.choose` against the cloud's points and its removed/ record, with
``send=daily``), then the cloud's retention. At the end both point sets must equal what
their policy keeps of the points each side ever had, and no point may have been sent
twice (chunks are only ever sent with a point they belong to, so no byte is sent twice
follows; the chunk-level "only missing chunks" is measured by the replication tests).

Run: `.venv/bin/python bench/offsite_retention_bench.py [--days 30]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cairn.replication.selection import Known, choose  # noqa: E402
from cairn.store.catalog import RecoveryPoint  # noqa: E402
from cairn.store.retention import Policy, select  # noqa: E402

LOCAL = Policy.parse("hourly=24,daily=7")
CLOUD = Policy.parse("daily=14,monthly=0")


def point(n: int, created: float) -> RecoveryPoint:
    return RecoveryPoint(id=f"{n:08x}", volume="web01.sda", volume_id=1, seq=n,
                         created=created, size=1, root=b"", allocated=0, bytes_read=0,
                         bytes_stored=0, seconds=0.0, source="bench")


def simulate(days: int) -> dict[str, object]:
    start = time.mktime((2026, 1, 1, 0, 30, 0, 0, 0, -1))
    local: list[RecoveryPoint] = []
    cloud: list[RecoveryPoint] = []
    removed: list[Known] = []
    sent: Counter[str] = Counter()
    every_point = []
    started = time.perf_counter()
    for hour in range(days * 24):
        p = point(hour, start + hour * 3600)
        every_point.append(p)
        local.append(p)
        kept = select(local, LOCAL)
        local = [q for q in local if q.id in kept]
        known = [Known(q.id, q.volume, q.created) for q in cloud] + removed
        for q in choose(local, known, "daily"):
            sent[q.id] += 1
            cloud.append(q)
        keep = select(cloud, CLOUD)
        removed += [Known(q.id, q.volume, q.created) for q in cloud if q.id not in keep]
        cloud = [q for q in cloud if q.id in keep]
    ever_sent = [p for p in every_point if p.id in sent]
    first_of_day = choose(every_point, [], "daily")
    checks = {
        "local_matches_policy": {p.id for p in local} == set(select(every_point, LOCAL)),
        "cloud_matches_policy": {p.id for p in cloud} == set(select(ever_sent, CLOUD)),
        "sent_first_of_each_day": [p.id for p in ever_sent] == [p.id for p in first_of_day],
        "no_point_sent_twice": max(sent.values()) == 1,
    }
    return {"days": days, "points_made": len(every_point), "local_kept": len(local),
            "cloud_kept": len(cloud), "sent": sum(sent.values()),
            "removed_by_cloud_retention": len(removed), "checks": checks,
            "ok": all(checks.values()), "seconds": round(time.perf_counter() - started, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    summary = simulate(parser.parse_args().days)
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
