"""`cairn virtualize`: a point runs as a VM whose console asks for a password."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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


def test_virtualize_console_needs_the_printed_password(bootable_image: Path,
                                                       tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    point = json.loads(ok("backup", "--repo", repo, "--volume", "vm1", bootable_image,
                          "--json"))["point"]
    display = free_display()
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "virtualize", "--repo", str(repo),
                             point, "--vnc", f"127.0.0.1:{5900 + display}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        line = ""
        deadline = time.monotonic() + 120
        while "password" not in line and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        password = line.split("password ")[1].split(";")[0]
        assert len(password) == 8
        assert security_types(5900 + display) == [VNC_AUTH]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "clone removed" in out
    assert ok("clones", "--repo", repo).strip().splitlines()[1:] == []
