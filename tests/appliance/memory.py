"""Measuring a real process's memory, and volumes whose every block an agent must send."""

from __future__ import annotations

from pathlib import Path


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def rss(pid: int) -> int:
    """Resident memory now, in bytes."""
    return _status(pid, "VmRSS")


def peak_rss(pid: int) -> int:
    """The highest resident memory since the process started or `reset_peak`, in bytes."""
    return _status(pid, "VmHWM")


def reset_peak(pid: int) -> None:
    """Start ``VmHWM`` again from the current resident memory (Linux's clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def filled(path: Path, mib: int) -> None:
    """``mib`` MiB of distinct 64 KiB blocks (no holes), which the agent must read and send
    whole; cheap to make."""
    block = bytes(range(256)) * 256
    with path.open("wb") as out:
        for n in range(mib * 16):
            out.write(n.to_bytes(8, "big") + block[8:])
