"""Cloud boot benchmark: the boot test machine to its login banner from the cloud vs local.

Why: issue 18 promises that any node with the bucket (and key) starts a VM from a cloud
point, reading blocks on demand, within 1.5x the time from the local repository. The
bootable test machine is backed up locally and replicated to SeaweedFS (`tests/s3server`,
on loopback); then `cairn screenshot-verify` (QEMU boots the point on a clone until the
login banner is read off the screen) runs on the local point and on the cloud point, each
with a cold page cache, the cloud one with an empty cache folder (a node that never saw the
repository: nothing but the bucket and the key).

With ``--via vm`` the boots are VMs the appliance runs (`cairn serve`, then ``cairn vm
start POINT`` and ``cairn vm start s3://BUCKET/PREFIX POINT``), timed from the command to
the guest's serial shell, which its init starts right after printing the banner; each cloud
boot is made by an appliance restarted with an empty cache folder.

Run as root: `python bench/cloud_boot_bench.py [--repeats 2] [--via vm]`. Results go to
`bench/work/cloud-boot-<time>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "virt"))

from images import WORK, save_result  # noqa: E402
from tools import drop_caches  # noqa: E402

from tests.appliance.harness import Appliance  # noqa: E402
from tests.s3server import SeaweedS3  # noqa: E402
from tests.virt.bootable_image import build_bootable_image  # noqa: E402
from tests.virt.test_vms import Serial  # noqa: E402

TARGET = 1.5


def cairn(env: dict[str, str], *args: str | Path) -> str:
    done = subprocess.run([sys.executable, "-m", "cairn", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, **env, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0 and not done.stdout.strip():
        raise SystemExit(f"cairn {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def boot(env: dict[str, str], repo: str, point: str) -> dict[str, Any]:
    """One cold boot to the login banner: wall seconds, and the verdict."""
    drop_caches()
    started = time.perf_counter()
    verdict = json.loads(cairn(env, "screenshot-verify", "--repo", repo, point, "--timeout",
                               "600", "--json"))
    return {"wall_s": round(time.perf_counter() - started, 2), "status": verdict["status"],
            "reported_s": verdict["seconds"], "accel": verdict["accel"]}


def vm_boot(appliance: Appliance, env: dict[str, str], *source: str) -> dict[str, Any]:
    """One cold `cairn vm start` (a VM the appliance owns) of ``source`` until the guest's
    serial shell answers, which its init starts right after printing the login banner
    (``running_s``: until the command returned, QEMU started); then the VM is stopped and
    its clone dropped."""
    admin = appliance.admin_args()
    drop_caches()
    started = time.perf_counter()
    vm = json.loads(cairn(env, "vm", "start", *source, "--name", "bench", "--cpus", "1",
                          "--memory", "1024", *admin, "--json"))
    if "name" not in vm:
        raise SystemExit(f"vm start failed: {vm}")
    running = time.perf_counter() - started
    console = json.loads(cairn(env, "vm", "console", "bench", *admin, "--json"))
    serial = Serial(Path(console["serial"]))
    try:
        serial.wait_for("/ #", timeout=600)
    finally:
        serial.close()
    wall = time.perf_counter() - started
    cairn(env, "vm", "stop", "bench", "--discard", "--timeout", "0", *admin, "--json")
    return {"wall_s": round(wall, 2), "running_s": round(running, 2), "status": "booted",
            "accel": vm["accel"]}


def vm_boots(repeats: int, appliance: Appliance, server: SeaweedS3, point: str, cloud: str
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`vm_boot` of the local point and of its cloud copy, each cloud one by an appliance
    restarted with an empty cache folder (a node that never saw the repository), with the
    requests it made to the bucket (``s3_requests``, by type)."""
    env = appliance.env
    folder = appliance.work
    local, remote = [], []
    try:
        for n in range(repeats):
            appliance.env["CAIRN_CACHE"] = str(folder / f"vm-cache{n}")
            appliance.start(timeout=180)  # a loaded host starts it slowly
            local.append(vm_boot(appliance, env, point))
            before = server.requests()
            remote.append(vm_boot(appliance, env, cloud, point))
            remote[-1]["s3_requests"] = {kind: count - before.get(kind, 0)
                                         for kind, count in server.requests().items()}
            appliance.stop()
    finally:
        appliance.stop()
    return local, remote


def run(repeats: int, folder: Path, server: SeaweedS3, via: str) -> dict[str, Any]:
    image = WORK / "bootable.img"
    if not image.exists():
        build_bootable_image(image)
    (folder / "appliance").mkdir()
    repo, cloud = folder / "appliance" / "repo", f"s3://{server.bucket}/boot"
    env = {"CAIRN_S3_ENDPOINT": server.endpoint, "CAIRN_S3_ACCESS_KEY": server.access_key,
           "CAIRN_S3_SECRET_KEY": server.secret_key, "CAIRN_CACHE": str(folder / "cache0"),
           "CAIRN_KEYS": str(folder / "keys")}
    appliance = Appliance(folder / "appliance", env=env) if via == "vm" else None
    if appliance is None:
        cairn(env, "init", "--repo", repo, "--encrypt")  # the cloud copy takes its key
    point = json.loads(cairn(env, "backup", "--repo", repo, "--volume", "boot", image,
                             "--json"))["point"]
    if appliance is None:
        env["CAIRN_KEY_FILE"] = str(repo / "key")  # all another node needs beside the bucket
    cairn(env, "init", "--repo", cloud)
    cairn(env, "replicate", "--repo", repo, "--to", cloud)
    if appliance is not None:
        local, remote = vm_boots(repeats, appliance, server, point, cloud)
    else:
        local, remote = [], []
        for n in range(repeats):
            local.append(boot(env, str(repo), point))
            remote.append(boot({**env, "CAIRN_CACHE": str(folder / f"cache{n + 1}")}, cloud,
                               point))
    ratio = statistics.median(r["wall_s"] for r in remote) / statistics.median(
        r["wall_s"] for r in local)
    return {"via": via, "image_bytes": image.stat().st_size, "local": local, "cloud": remote,
            "ratio": round(ratio, 3), "target_ratio": TARGET, "load": os.getloadavg()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--via", choices=("screenshot", "vm"), default="screenshot",
                        help="screenshot-verify boots (default), or VMs the appliance runs "
                             "(`cairn serve`, `cairn vm start`), timed to the serial shell")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cairn-cloud-boot-") as tmp, \
            SeaweedS3.start(metrics=True) as server:
        results = run(args.repeats, Path(tmp), server, args.via)
    save_result("cloud-boot", results)
    booted = all(r["status"] == "booted" for r in results["local"] + results["cloud"])
    ok = booted and results["ratio"] <= TARGET
    print(f"{'PASS' if ok else 'FAIL'}: login banner from the cloud in {results['ratio']}x "
          f"the local time (target <= {TARGET}x){'' if booted else '; a boot failed'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
