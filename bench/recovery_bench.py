"""The appliance's own recovery: from an empty machine to an incremental backup again.

Why: issue 16 promises that an appliance lost with its disks is rebuilt from its offsite
bucket alone (`cairn serve --recover-from`), and that its agents go on with incremental
backups: the bytes an agent sends after the recovery stay close to the bytes it changed
(target: <= 1.1x). Measured with the 2 GiB bench pair of `images.py` (a Debian root file
system plus random data, and the same after installing a package and rewriting data), on a
real SeaweedFS S3 gateway on loopback (`tests/s3server.py`):

1. an appliance (encrypted repository) and an agent protecting a copy of image A; one full
   backup, then the machine's offsite policy replicates it and the appliance's state;
2. the appliance is killed and its repository removed: only the bucket and the key remain;
3. `cairn serve --recover-from` on an empty folder, timed until the API answers (it pulls
   the newest point of each volume back from the bucket);
4. the agent's disk becomes image B (the changed ranges written in place) and the agent
   backs up: its time, bytes read and bytes sent against the bytes changed;
5. the new point restores to image B bit for bit (checked, not timed).

Results go to `bench/work/recovery-<time>.json`. Run:
`.venv/bin/python bench/recovery_bench.py [--size 2G] [--images bench/work]` (the image
pair is built, as root, when missing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from images import WORK, ImagePair, build, parse_size, save_result  # noqa: E402

from tests.appliance.harness import Agent, Appliance, cairn, wait_for  # noqa: E402
from tests.offsite.conftest import s3_env  # noqa: E402
from tests.s3server import SeaweedS3  # noqa: E402

TARGET = 1.1


def apply_changes(pair: ImagePair, disk: Path) -> None:
    """Turn ``disk`` (a copy of A) into B by writing B's bytes in the changed ranges."""
    with pair.b.open("rb") as b, disk.open("r+b") as d:
        for offset, length in json.loads(pair.changed.read_text()):
            b.seek(offset)
            d.seek(offset)
            d.write(b.read(length))


def digest(path: Path) -> str:
    h = hashlib.blake2b()
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def replicate(app: Appliance, url: str) -> dict[str, Any]:
    started = time.monotonic()
    cairn("offsite", *app.admin_args(), "set", "web01", "--to", url, "--every", "1d",
          env=app.env, timeout=3600)
    policy = wait_for(lambda: (p := json.loads(cairn("offsite", *app.admin_args(),
                                                     "--json").stdout)[0])["last_ok"] and p,
                      timeout=3600, every=1.0)
    assert policy["last_error"] is None, policy
    return {"seconds": round(time.monotonic() - started, 1), **policy["last_report"]}


def run(pair: ImagePair, work: Path, server: SeaweedS3) -> dict[str, Any]:
    app = Appliance(work, env=s3_env(server, work / "old-node"), encrypt=True)
    try:
        return measure(pair, work, server, app)
    finally:
        app.stop()


def measure(pair: ImagePair, work: Path, server: SeaweedS3, app: Appliance
            ) -> dict[str, Any]:
    url = f"s3://{server.bucket}/recovery{int(time.time())}"
    app.start()
    agent = Agent(app, "web01")
    disk = work / "web01-sda.img"
    subprocess.run(["cp", "--sparse=always", str(pair.a), str(disk)], check=True)
    agent.protect("sda", disk)
    full = agent.backup()
    print(f"full backup: {full['volumes'][0]['bytes_sent']} bytes sent", flush=True)
    offsite = replicate(app, url)
    print(f"offsite: {offsite}", flush=True)
    key = work / "kept-apart.key"
    shutil.copyfile(app.repo / "key", key)
    app.stop(kill=True)
    shutil.rmtree(app.repo)

    app.repo = work / "new-repo"
    app.env = {**app.env, **s3_env(server, work / "new-node")}
    started = time.monotonic()
    app.start("--recover-from", url, "--key-file", str(key), timeout=3600)
    recovered = time.monotonic() - started
    print(f"recovered in {recovered:.1f} s", flush=True)
    apply_changes(pair, disk)
    backup_started = time.monotonic()
    summary = agent.backup()
    backup_seconds = time.monotonic() - backup_started
    [volume] = summary["volumes"]
    app.stop()
    restored = work / "restored.img"
    cairn("restore", "--repo", app.repo, volume["point"], restored, timeout=3600)
    same = digest(restored) == digest(pair.b)
    ratio = volume["bytes_sent"] / pair.changed_bytes
    return {
        "image_bytes": pair.size, "changed_bytes": pair.changed_bytes,
        "offsite_first_copy": offsite,
        "recover_seconds": round(recovered, 1),
        "first_backup_after": {"seconds": round(backup_seconds, 1), "mode": volume["mode"],
                               "bytes_read": volume["bytes_read"],
                               "bytes_sent": volume["bytes_sent"],
                               "agent_changed_bytes": volume["changed_bytes"]},
        "empty_machine_to_backup_done_seconds": round(recovered + backup_seconds, 1),
        "sent_per_changed_byte": round(ratio, 4), "target": TARGET, "met": ratio <= TARGET,
        "restores_to_b": same,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="2G")
    parser.add_argument("--images", type=Path, default=WORK,
                        help="where the image pair is kept (images-<size>/)")
    args = parser.parse_args()
    pair = build(parse_size(args.size), work=args.images)
    work = Path(tempfile.mkdtemp(prefix="cairn-recovery-bench-"))
    try:
        with SeaweedS3.start() as server:
            result = run(pair, work, server)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save_result("recovery", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
