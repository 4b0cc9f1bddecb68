"""Cloud prune benchmark: how a prune pass grows with the points a repository holds.

Why: issue 20 asks that a cloud prune run beside a fleet at any size; a prune lists every
point and needs every chunk they reach, and the node running it is usually not the one that
wrote them (its cache counts no runs of other appliances' volumes, `cloud_counts`). One
appliance backs up ``--volumes`` small volumes a few times each (scattered writes: real,
distinct block maps) and replicates them to SeaweedFS (`tests/s3server`, on loopback); copies
of those points under new ids (`tests.store.cloud_points.plant_points`, each a real point
sharing its template's block map) fill the repository up to each ``--levels`` count. At each
level a second node (a fresh cache: every volume is another appliance's to it) prunes
``--passes`` times: the first pass is its first ever, the later ones are what a node pruning
every few minutes pays. The load average is recorded with every figure.

Run: `python bench/cloud_prune_bench.py [--levels 1000 10000]`. Results go to
`bench/work/cloud-prune-<time>.json`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from images import save_result  # noqa: E402

from cairn.ops.cloud_space import prune_cloud  # noqa: E402
from cairn.replication.replicate import replicate  # noqa: E402
from cairn.store.catalog import RecoveryPoint  # noqa: E402
from cairn.store.cloud import init_cloud, open_cloud  # noqa: E402
from cairn.store.repository import Repository  # noqa: E402
from tests.s3server import SeaweedS3  # noqa: E402
from tests.store.cloud_points import Requests, plant_points  # noqa: E402
from tests.store.helpers import backup, make_image, mutate  # noqa: E402

SIZE = 4 * 2**20
ROUNDS = 4


def _env(folder: Path, server: SeaweedS3) -> None:
    os.environ.update({"CAIRN_S3_ENDPOINT": server.endpoint,
                       "CAIRN_S3_ACCESS_KEY": server.access_key,
                       "CAIRN_S3_SECRET_KEY": server.secret_key,
                       "CAIRN_KEYS": str(folder / "keys"),
                       "CAIRN_CACHE": str(folder / "cache-writer")})


def _real_points(folder: Path, url: str, volumes: int) -> tuple[Repository, list[RecoveryPoint]]:
    """The appliance's points, replicated: returns the writer's cloud and its points."""
    local = Repository.init(folder / "local")
    for n in range(volumes):
        path = folder / f"disk{n}.img"
        data = make_image(path, SIZE, seed=n)
        for k in range(ROUNDS):
            backup(local, f"vol{n:02d}", path, mutate(path, data, seed=n * 100 + k) if k else None)
    cloud = init_cloud(url, None)
    replicate(local, cloud)
    local.close()
    return cloud, list(cloud.catalog.points())


def _passes(folder: Path, url: str, level: int, passes: int) -> dict[str, Any]:
    """A fresh node's prune passes at ``level`` points, timed, with their requests."""
    os.environ["CAIRN_CACHE"] = str(folder / f"cache-pruner-{level}")
    rows = []
    with open_cloud(url, None) as node:
        requests = Requests(node)
        for _ in range(passes):
            started = time.perf_counter()
            done = prune_cloud(node)
            rows.append({"seconds": round(time.perf_counter() - started, 3),
                         "points": done.pruned.points, "requests": requests.take(),
                         "load": os.getloadavg()})
            print(f"  {level} points: prune pass {rows[-1]['seconds']:.2f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return {"level": level, "passes": rows}


def measure(folder: Path, server: SeaweedS3, levels: list[int], volumes: int,
            passes: int) -> dict[str, Any]:
    _env(folder, server)
    url = f"s3://{server.bucket}/prune-bench"
    writer, real = _real_points(folder, url, volumes)
    have = len(real)
    rows = []
    for level in levels:
        extra = level - have
        for n in range(8):  # copies spread over volumes of their own, as many appliances'
            share = extra // 8 + (n < extra % 8)
            template = replace(real[n % len(real)], volume=f"synth-{n}")
            plant_points(writer, template, share)
        have = max(have, level)
        rows.append(_passes(folder, url, level, passes))
    writer.close()
    return {"volumes": volumes, "real_points": len(real), "levels": rows,
            "load": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--volumes", type=int, default=25)
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cairn-prune-bench-") as tmp, \
            SeaweedS3.start() as server:
        result = measure(Path(tmp), server, args.levels, args.volumes, args.passes)
    print(f"saved to {save_result('cloud-prune', result)}")


if __name__ == "__main__":
    main()
