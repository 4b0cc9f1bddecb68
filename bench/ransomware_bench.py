"""What ransomware detection adds to an incremental backup of the bench pair (target: < 10%).

Why: detection runs after every backup, so its cheap path (a tree diff and a sample of chunk
headers, `cairn.insights.ransomware`) must cost little next to the backup itself; the file
scan runs only when that path finds blocks turned incompressible.

Setup (untimed): the cached image pair of `images.py` (A, and B = A after a package install
and part of the data rewritten in place), a fresh repository holding a point of A.
Timed, median of 3 runs on a warm page cache, in process: the incremental backup of B with
its changed ranges (`Ingest.run`), then `examine` of the new point as every backup runs it,
and `examine(deep=True)`, what the file scan costs when the gate opens.

Run as root: `.venv/bin/python bench/ransomware_bench.py [--size 512M]`; results go to
`bench/work/ransomware-SIZE-TIMESTAMP.json`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import images
from images import WORK

from cairn.insights.ransomware import examine
from cairn.sources.image import ImageSource, load_changed_ranges
from cairn.store.ingest import Ingest
from cairn.store.repository import Repository

RUNS = 3


def one_run(pair: images.ImagePair, scratch: Path) -> dict[str, float]:
    repo = Repository.init(scratch / "repo")
    try:
        with ImageSource(pair.a) as source:
            Ingest(repo, "bench", source).run()
        with ImageSource(pair.b) as source:
            ranges = load_changed_ranges(pair.changed, source.size)
            started = time.perf_counter()
            point = Ingest(repo, "bench", source).run(ranges)
            backup = time.perf_counter() - started
        finding = examine(repo, point)
        deep = examine(repo, point, deep=True)
        return {"backup": backup, "detect": finding.seconds, "scan": deep.seconds,
                "changed_blocks": finding.changed_blocks,
                "turned_blocks": finding.turned_blocks, "flagged": bool(finding.reasons)}
    finally:
        repo.close()
        shutil.rmtree(scratch / "repo")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="512M")
    args = parser.parse_args()
    size = images.parse_size(args.size)
    pair = images.build(size)
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        runs = [one_run(pair, Path(tmp)) for _ in range(RUNS)]
    result: dict[str, Any] = {
        key: statistics.median(r[key] for r in runs) for key in ("backup", "detect", "scan")}
    result["overhead"] = result["detect"] / result["backup"]
    result["changed_blocks"] = runs[0]["changed_blocks"]
    result["turned_blocks"] = runs[0]["turned_blocks"]
    result["flagged"] = any(r["flagged"] for r in runs)
    out = WORK / f"ransomware-{images.size_label(size)}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"runs": runs, **result}, indent=2))
    print(f"incremental backup {result['backup']:.3f} s; detection {result['detect']:.4f} s "
          f"({result['overhead']:.1%}, target < 10%); file scan when the gate opens "
          f"{result['scan']:.2f} s; {result['changed_blocks']} changed blocks, "
          f"{result['turned_blocks']} turned incompressible; flagged: {result['flagged']}")
    return 0 if result["overhead"] < 0.10 and not result["flagged"] else 1


if __name__ == "__main__":
    sys.exit(main())
