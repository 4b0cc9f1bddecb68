"""How many Object Lock requests immutable replication costs as points accumulate.

Why: issue 13 asks that S3 Object Lock retention updates per backup stay bounded as points
accumulate. Chunks are shared by many points, so the naive scheme (give every object a point
needs the point's date at each backup) costs one request per object per backup; cairn
extends by generation (`cairn/store/immutable.py`): new chunks go up already locked, and an
object still needed is extended once per generation.

This runs N backups of a small image against a real SeaweedFS bucket with Object Lock,
replicating each with ``--immutable PERIOD`` on a replayed clock (one backup every
``--every``), and counts the retention requests each replication made, beside what the
naive scheme would have made (every object the point needs that was not uploaded by that
replication). Nothing waits: the clock is injected, the locks S3 holds are real.

Run: `.venv/bin/python bench/object_lock_bench.py [--backups 100] [--period 1d] [--every 1h]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cairn.replication.replicate import replicate  # noqa: E402
from cairn.store.blockmap import diff  # noqa: E402
from cairn.store.catalog import RecoveryPoint  # noqa: E402
from cairn.store.chunks import ZERO  # noqa: E402
from cairn.store.cloud import Cloud, init_cloud  # noqa: E402
from cairn.store.immutable import Immutability  # noqa: E402
from cairn.store.marks import parse_duration  # noqa: E402
from cairn.store.repository import Repository  # noqa: E402
from tests.s3server import SeaweedS3  # noqa: E402
from tests.store.helpers import backup, make_image, mutate  # noqa: E402

BUCKET = "object-lock-bench"


def objects(repo: Repository, point: RecoveryPoint) -> int:
    """How many distinct objects (nodes and chunks) the point's block map reaches."""
    return len({h for _s, _a, h in diff(repo.nodes, None, repo.tree(point))
                if h is not None and h != ZERO})


def run(args: argparse.Namespace, server: SeaweedS3, work: Path) -> dict[str, object]:
    period, every = parse_duration(args.period), parse_duration(args.every)
    now = [(time.time() // period + 1) * period + 60]
    img = work / "disk.img"
    data = make_image(img, args.size_mib * 1024 * 1024, seed=7, fill=0.9)
    server.client().create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    rows = []
    start = now[0]
    with Repository.init(work / "local") as local, \
            init_cloud(f"s3://{BUCKET}/bench", None) as cloud:
        assert isinstance(cloud.remote, Cloud)
        remote = cloud.remote
        remote.immutable(cloud, Immutability(period, clock=lambda: now[0]))
        assert remote.locker is not None
        for n in range(args.backups):
            if n:
                now[0] += every
                mutate(img, data, seed=1000 + n, writes=args.writes)
            point = backup(local, "v", img)
            before = remote.locker.retention.extensions
            report = replicate(local, cloud)
            needed = objects(cloud, point)
            rows.append({"backup": n, "extensions": remote.locker.retention.extensions - before,
                         "sent": report.chunks_sent, "needed": needed,
                         "naive": needed - report.chunks_sent + 1})
    extensions = sum(r["extensions"] for r in rows)
    naive = sum(r["naive"] for r in rows)
    return {"backups": args.backups, "period": args.period, "every": args.every,
            "image_mib": args.size_mib, "objects_per_point": rows[-1]["needed"],
            "chunks_sent_locked": sum(r["sent"] for r in rows),
            "extension_requests": extensions, "naive_requests": naive,
            "generations_crossed": int(now[0] // period - start // period),
            "max_per_backup": max(r["extensions"] for r in rows),
            "backups_with_extensions": sum(1 for r in rows if r["extensions"]),
            "marks_records": args.backups}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backups", type=int, default=100)
    parser.add_argument("--period", default="1d", help="the --immutable period (1d: 100 "
                                                       "hourly backups cross 4 generations)")
    parser.add_argument("--every", default="1h", help="time between backups")
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--writes", type=int, default=4, help="blocks changed per backup")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cairn-lock-bench-") as tmp, \
            SeaweedS3.start() as server:
        work = Path(tmp)
        os.environ.update(CAIRN_S3_ENDPOINT=server.endpoint,
                          CAIRN_S3_ACCESS_KEY=server.access_key,
                          CAIRN_S3_SECRET_KEY=server.secret_key,
                          CAIRN_CACHE=str(work / "cache"), CAIRN_KEYS=str(work / "keys"))
        result = run(args, server, work)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
