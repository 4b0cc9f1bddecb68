"""Processes the appliance owns (a managed VM's runner, an export): found again by pid and
command line, stopped by signal, their status files and logs read forgivingly.

Why a command-line check: a pid kept in a file may be reused by an unrelated process after
the owned one died (a host reboot, a kill); only a live process whose command line carries
the owner's marker counts, and a zombie does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any


def alive(pid: object, marker: bytes) -> bool:
    """Whether ``pid`` is a live (not zombie) process whose command line holds ``marker``."""
    if not isinstance(pid, int):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return marker in cmdline and stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_process(pid: int, marker: bytes, patience: float) -> None:
    """SIGTERM the process, wait for it; SIGKILL it if it hangs past ``patience``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + patience
    while alive(pid, marker):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.1)


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "no output"
    return " | ".join(text.strip().splitlines()[-lines:]) or "no output"

