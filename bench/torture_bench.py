"""A long `cairn debug torture` run, for the record: kills over every writer, nothing lost.

Run as root from the repository: ``.venv/bin/python bench/torture_bench.py --seconds 600
--seed 11``. ``--cloud`` alone adds a cloud repository in a SeaweedFS of its own
(`tests/s3server.py`), ``--cloud s3://BUCKET/PREFIX`` one there (with the ``CAIRN_S3_*``
variables set): the workers then also replicate, unpublish points and run the pack prune,
with a grace period of ``--grace`` seconds so that condemned packs really go. It prints the
outcome as JSON (passes, kills, points checked, the prunes seen and the packs they freed); a
failure exits non-zero with the run's seed and the failing pass's worker seed, which replay
it. Nineteen passes in twenty are SIGKILLed: ten minutes give the issue's 1,000 kills on two
loaded cores (workers are forked, each pass restores only the points new since the last,
and every 100th pass and the last are checked whole).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="600")
    parser.add_argument("--kill-share", default="0.95")
    parser.add_argument("--seed", default="11")
    parser.add_argument("--cloud", nargs="?", const="", metavar="s3://BUCKET/PREFIX",
                        help="also replicate and prune there (alone: in a SeaweedFS of its own)")
    parser.add_argument("--grace", default="6", help="the cloud prune's grace period, seconds")
    parser.add_argument("--work", help="folder for the repository (default: a temporary one)")
    args = parser.parse_args()
    command = [sys.executable, "-m", "cairn", "debug", "torture", "--seconds", args.seconds,
               "--seed", args.seed, "--kill-share", args.kill_share, "--json"]
    command += ["--work", args.work] if args.work else []
    if args.cloud is None:
        return subprocess.run(command, cwd=ROOT).returncode
    command += ["--grace", args.grace]
    if args.cloud:
        return subprocess.run([*command, "--cloud", args.cloud], cwd=ROOT).returncode
    from tests.s3server import SeaweedS3

    with SeaweedS3.start() as server, tempfile.TemporaryDirectory(prefix="cairn-tb-") as tmp:
        url = f"s3://{server.bucket}/torture-{uuid.uuid4().hex[:10]}"
        env = {**os.environ, **server.cairn_env(Path(tmp))}
        return subprocess.run([*command, "--cloud", url], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
