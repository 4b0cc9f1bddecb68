"""A long `cairn debug torture` run, for the record: kills over every writer, nothing lost.

Run as root from the repository: ``.venv/bin/python bench/torture_bench.py --seconds 600
--seed 11`` (add ``--cloud s3://BUCKET/PREFIX`` with the ``CAIRN_S3_*`` variables set to
include replication and cloud prunes). It prints the outcome as JSON; a failure exits
non-zero with the run's seed and the failing pass's worker seed, which replay it.
Nineteen passes in twenty are SIGKILLed: ten minutes give the issue's 1,000 kills on two
loaded cores (workers are forked, each pass restores only the points new since the last,
and every 100th pass and the last are checked whole).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", default="600")
    parser.add_argument("--kill-share", default="0.95")
    parser.add_argument("--seed", default="11")
    parser.add_argument("--cloud", help="s3://BUCKET/PREFIX: also replicate and prune there")
    parser.add_argument("--work", help="folder for the repository (default: a temporary one)")
    args = parser.parse_args()
    command = [sys.executable, "-m", "cairn", "debug", "torture", "--seconds", args.seconds,
               "--seed", args.seed, "--kill-share", args.kill_share, "--json"]
    command += ["--cloud", args.cloud] if args.cloud else []
    command += ["--work", args.work] if args.work else []
    return subprocess.run(command, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
