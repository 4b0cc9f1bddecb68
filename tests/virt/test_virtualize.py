"""`cairn virtualize`: a machine point runs as a VM with every disk, whose console asks for
a password."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from cairn.store.machine_points import MachinePoints
from cairn.store.repository import Repository
from tests.cli.test_cli import ROOT, ok

VNC_AUTH = 2


def free_display() -> int:
    for display in range(60, 100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", 5900 + display)) != 0:
                return display
    raise AssertionError("no free VNC display")


def security_types(port: int) -> list[int]:
    """The RFB security types the server offers (1: none, 2: VNC password)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert s.recv(12) == b"RFB 003.008\n"
        s.sendall(b"RFB 003.008\n")
        count = s.recv(1)[0]
        return list(s.recv(count))


def record_machine_point(repo: Path, machine: str, disks: dict[str, str]) -> str:
    """Group volume points as one machine point, as a backup of a multi-disk machine does."""
    with contextlib.closing(Repository.open(repo)) as store:
        members = [(disk, store.resolve(point)) for disk, point in disks.items()]
        return MachinePoints(store.catalog).record(
            store.new_point_id(), machine, time.time(), "crash", "", members).id


def qemu_drives(parent: int) -> list[str]:
    """The ``-drive`` values of the QEMU process ``parent`` started."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            args = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if text[text.index("(") + 1:].startswith("qemu-system") and \
                int(text[text.rindex(")") + 2:].split()[1]) == parent:
            return [args[i + 1].decode() for i, a in enumerate(args) if a == b"-drive"]
    raise AssertionError(f"no QEMU runs under process {parent}")


def test_virtualize_console_needs_the_printed_password(bootable_image: Path,
                                                       tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    data = tmp_path / "data.img"
    data.write_bytes(b"SECOND DISK".ljust(4 * 1024 * 1024, b"\0"))
    system = json.loads(ok("backup", "--repo", repo, "--volume", "vm1.sda", bootable_image,
                           "--json"))["point"]
    second = json.loads(ok("backup", "--repo", repo, "--volume", "vm1.sdb", data,
                           "--json"))["point"]
    record_machine_point(repo, "vm1", {"sda": system, "sdb": second})
    display = free_display()
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "virtualize", "--repo", str(repo),
                             "vm1@latest", "--name", "try", "--vnc",
                             f"127.0.0.1:{5900 + display}", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = ""
        deadline = time.monotonic() + 120
        while "vnc_password" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        running = json.loads(line)  # --json: one line per event
        assert len(running["vnc_password"]) == 8
        assert "machine point" in running["what"]
        assert running["clones"] == ["try.sda", "try.sdb"]
        assert security_types(5900 + display) == [VNC_AUTH]
        clones = json.loads(ok("clones", "--repo", repo, "--json"))
        assert [(c["name"], c["point"]) for c in clones] == [("try.sda", system),
                                                             ("try.sdb", second)]
        drives = qemu_drives(proc.pid)
        assert len(drives) == 2 and all("nbd://127.0.0.1:" in d for d in drives)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {
        "event": "stopped", "clones": ["try.sda", "try.sdb"], "clones_kept": False}
    assert ok("clones", "--repo", repo).strip().splitlines()[1:] == []
