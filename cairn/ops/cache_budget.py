"""One memory budget for the decoded-block caches of every export on this machine.

Why: an export used to take a quarter of the memory available when it started, so several
started at once (the disks of machine points, an appliance serving several VMs) each saw
the same free memory and together promised more than there is. Now an export reserves its
cache in a ledger that every cairn process of the machine shares: a folder with one file per
live reservation (its size in bytes), which its export holds under an exclusive ``flock``
for as long as it runs, read and added to under an exclusive ``flock`` of ``ledger.lock``.
The kernel drops a dead process's locks, so a crashed export's share comes back at the next
reservation.

The machine budget is a quarter of the memory (``MemTotal``). An export asks for what it may
hold (the data its points hold: decoded blocks are kept only of data it serves) and is given
that, capped by what the budget has left and by a quarter of the memory available now, but
never under `CACHE_BYTES` (the reader's own floor: a cache that small is taken even from a
spent budget). An explicit size (``--cache``) is taken as asked, and counts against the
others.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cairn.store.reader import CACHE_BYTES

SHARE = 4
"""The budget is 1/SHARE of the machine's memory; no export takes over 1/SHARE of what is
available when it starts."""


@dataclass(frozen=True)
class Budget:
    """Where the machine's reservations are kept and what they may add up to."""

    folder: Path
    total: int
    available: int


def ledger_folder() -> Path:
    """``$CAIRN_RUN_DIR/export-caches``; by default ``/run/cairn`` for root (the appliance),
    else a folder of this user's under the temporary directory."""
    base = os.environ.get("CAIRN_RUN_DIR") or (
        "/run/cairn" if os.geteuid() == 0 else f"{tempfile.gettempdir()}/cairn-{os.getuid()}")
    return Path(base) / "export-caches"


def machine_budget(meminfo: Path = Path("/proc/meminfo")) -> Budget:
    fields = {}
    for line in meminfo.read_text().splitlines():
        name, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[name] = int(value.split()[0]) * 1024
    total = fields.get("MemTotal", 0)
    return Budget(ledger_folder(), total // SHARE, fields.get("MemAvailable", total) // SHARE)


@contextlib.contextmanager
def reserve(budget: Budget, want: int, exact: bool = False) -> Iterator[int]:
    """Hold a share of ``budget`` while the block runs; yields its size in bytes: ``want``
    if ``exact``, else as the module says."""
    budget.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(budget.folder / "ledger.lock", "a") as ledger:
        fcntl.flock(ledger, fcntl.LOCK_EX)
        if exact:
            size = want
        else:
            left = budget.total - sum(held(budget.folder))
            size = max(CACHE_BYTES, min(want, left, budget.available))
        entry = budget.folder / f"{os.getpid()}-{secrets.token_hex(6)}.share"
        fd = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, str(size).encode())
    try:
        yield size
    finally:
        entry.unlink(missing_ok=True)
        os.close(fd)


def held(folder: Path) -> list[int]:
    """The sizes of the live reservations in ``folder``; those whose process died are
    removed (their lock is free)."""
    sizes = []
    for entry in folder.glob("*.share"):
        try:
            fd = os.open(entry, os.O_RDONLY)
        except FileNotFoundError:  # its export ended just now
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: its export runs
            with contextlib.suppress(ValueError):
                sizes.append(int(os.read(fd, 32) or b"0"))
        else:
            entry.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return sizes
