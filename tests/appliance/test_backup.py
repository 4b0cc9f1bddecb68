"""End to end: serve, pair, protect, back up by job, restore byte for byte; resume; metrics."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path

from tests.appliance.harness import Agent, Appliance, restore, wait_for

MiB = 1 << 20


def make_image(path: Path, size: int, seed: int, fill: float = 0.5) -> bytearray:
    rnd = random.Random(seed)
    data = bytearray(size)
    for off in range(0, size, 64 * 1024):
        if rnd.random() < fill:
            data[off : off + 64 * 1024] = rnd.randbytes(64 * 1024)
    path.write_bytes(data)
    return data


def scribble(path: Path, data: bytearray, seed: int, writes: int = 6) -> int:
    """Overwrite a few ranges in place (not block aligned); returns bytes written."""
    rnd = random.Random(seed)
    total = 0
    with open(path, "r+b") as f:
        for _ in range(writes):
            n = rnd.randrange(1, 100_000)
            off = rnd.randrange(0, len(data) - n)
            data[off : off + n] = rnd.randbytes(n)
            f.seek(off)
            f.write(data[off : off + n])
            total += n
    return total


def test_backup_job_end_to_end(appliance: Appliance, make_agent: Callable[..., Agent],
                               tmp_path: Path) -> None:
    agent = make_agent("web01")
    disk = tmp_path / "disk.img"
    data = make_image(disk, 16 * MiB, seed=1)
    agent.protect("sda", disk)

    first = agent.backup()
    assert first["ok"], first
    assert first["volumes"][0]["mode"] == "full"
    assert restore(appliance, first["points"][0], tmp_path / "r1.img") == data

    changed = scribble(disk, data, seed=2)
    second = agent.backup()
    volume = second["volumes"][0]
    assert second["ok"] and volume["mode"] == "scan"
    assert volume["bytes_sent"] < 2 * changed + 6 * 128 * 1024
    assert restore(appliance, second["points"][0], tmp_path / "r2.img") == data
    # The first point is still whole and unchanged.
    assert restore(appliance, first["points"][0], tmp_path / "r1b.img") != data

    jobs = appliance.jobs("web01")
    assert [j["state"] for j in jobs] == ["succeeded", "succeeded"]
    assert jobs[1]["bytes_sent"] == volume["bytes_sent"]
    assert jobs[1]["bytes_read"] == volume["bytes_read"] > 0
    assert 0 < jobs[1]["bytes_stored"] < jobs[0]["bytes_stored"]
    assert jobs[1]["seconds"] is not None and jobs[1]["points"] == second["points"]
    metrics = appliance.metrics()
    assert 'cairn_jobs{state="succeeded"} 2' in metrics
    assert "process_cpu_seconds_total" in metrics


def test_upload_resumes_after_agent_is_killed(appliance: Appliance,
                                              make_agent: Callable[..., Agent],
                                              tmp_path: Path) -> None:
    agent = make_agent("db01", max_bytes_per_second=6 * MiB)
    disk = tmp_path / "disk.img"
    data = make_image(disk, 24 * MiB, seed=3, fill=1.0)
    agent.protect("sda", disk)
    with appliance.admin() as c:
        c.json("POST", "/api/v1/machines/db01/jobs", json={})
    proc = agent.start()
    wait_for(lambda: appliance.jobs("db01")[0]["bytes_sent"] > 6 * MiB, timeout=30)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    sent_before = appliance.jobs("db01")[0]["bytes_sent"]
    assert sent_before < len(data)

    summary = agent.run_once()[0]
    assert summary["ok"], summary
    resent = summary["volumes"][0]["bytes_sent"]
    assert resent < len(data) - sent_before + 8 * MiB
    assert resent < len(data)
    assert restore(appliance, summary["points"][0], tmp_path / "r.img") == data
    job = appliance.jobs("db01")[0]
    assert job["state"] == "succeeded" and job["attempts"] == 2


def test_job_survives_appliance_restart(appliance: Appliance,
                                        make_agent: Callable[..., Agent],
                                        tmp_path: Path) -> None:
    agent = make_agent("app01")
    disk = tmp_path / "disk.img"
    data = make_image(disk, 4 * MiB, seed=4)
    agent.protect("sda", disk)
    with appliance.admin() as c:
        c.json("POST", "/api/v1/machines/app01/jobs", json={})
    with appliance.client(agent.token) as c:
        taken = c.json("POST", "/api/v1/agent/jobs/next")
    assert taken["state"] == "running"

    assert appliance.proc is not None
    killed = appliance.proc.pid
    appliance.stop(kill=True)
    tmp = tmp_path / "tmp"  # as a verification VM and a fleecing view of it left them
    left = [tmp / f"cairn-vm-{killed}-x1", tmp / f"cairn-qemu-{killed}-x2"]
    live = tmp / f"cairn-vm-{os.getpid()}-x3"
    for folder in (*left, live):
        folder.mkdir(parents=True)
        (folder / "screen.png").write_bytes(b"png")
    appliance.env = {**appliance.env, "TMPDIR": str(tmp)}
    appliance.start()
    assert appliance.jobs("app01")[0]["state"] == "queued"
    assert sorted(tmp.iterdir()) == [live]  # the dead appliance's: removed

    summary = agent.run_once()[0]
    assert summary["ok"] and summary["job"] == taken["id"]
    assert restore(appliance, summary["points"][0], tmp_path / "r.img") == data


def test_full_rescan_sends_only_differences(appliance: Appliance,
                                            make_agent: Callable[..., Agent],
                                            tmp_path: Path) -> None:
    agent = make_agent("fs01")
    disk = tmp_path / "disk.img"
    data = make_image(disk, 8 * MiB, seed=5)
    agent.protect("sda", disk)
    assert agent.backup()["ok"]
    for path in (agent.dir / "state" / "volumes" / "sda").iterdir():
        path.unlink()  # the agent lost its cache: the appliance's hashes stand in
    scribble(disk, data, seed=6, writes=2)
    with appliance.admin() as c:
        c.json("POST", "/api/v1/machines/fs01/jobs", json={"full_rescan": True})
    summary = agent.run_once()[0]
    assert summary["ok"] and summary["volumes"][0]["mode"] == "scan"
    assert summary["volumes"][0]["bytes_sent"] < 1 * MiB
    assert restore(appliance, summary["points"][0], tmp_path / "r.img") == data
