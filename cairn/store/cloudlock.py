"""The prunes' lock of a cloud repository: one object per holder under ``locks/``.

Writers (replication, delete, retention) take no lock at all (`cloud`'s docstring says why
that is safe); what stays is a lock so that two prunes do not work at once, taken
exclusive. ``lifetime`` is also the grace period G of the two-step deletion. What makes the
lock safe when hosts, clocks and networks misbehave:

- Ages come from the S3 server's own clock: a lock's age is the server's LastModified of
  our freshly written lock object minus that of the other's. No host compares its clock
  with another's.
- A holder refreshes its object every ``lifetime / 6``; one that could not refresh for
  ``lifetime - lifetime / 6`` (measured on its own monotonic clock, a duration, not a date)
  has *lost* the lock: `check` raises `LockLost` and the caller stops writing, before the
  others may judge the object stale at ``lifetime``.
- A lock left by a process of this host that is gone (same boot, no such pid, or a pid
  reused by a later process) is taken over at once, not after ``lifetime``.
- The lock object is created with ``If-None-Match`` where the server supports it.

``lifetime`` is ``CAIRN_CLOUD_LOCK_SECONDS`` (default 30 minutes), the longest a dead
holder's lock is honoured; a prune never condemns an object younger than it.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from cairn import logs
from cairn.errors import CairnError, Locked
from cairn.store.backend import Backend

LOCK_WAIT = 60.0


def lifetime() -> float:
    return float(os.environ.get("CAIRN_CLOUD_LOCK_SECONDS") or 30 * 60)


class LockLost(CairnError):
    """This writer could not refresh its cloud lock in time; it must stop writing."""

    retryable = True


class Bucket(Backend, Protocol):
    """What the lock needs beyond a `Backend`: the server's clock and conditional writes."""

    max_object: int | None

    def put_new(self, name: str, data: bytes) -> bool: ...

    def stamp(self, name: str) -> float: ...

    def stamps(self, prefix: str, after: str | None = None) -> Iterator[tuple[str, float]]:
        ...

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]: ...


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _started(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks after boot), None if no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


def _dead_here(info: dict[str, object]) -> bool:
    """Whether the holder was a process of this host, this boot, that no longer runs."""
    if info.get("host") != os.uname().nodename or info.get("boot") != _boot_id():
        return False
    try:
        pid = int(str(info.get("pid")))
    except ValueError:
        return False
    return _started(pid) != info.get("started")


def describe(info: dict[str, object], age: float) -> str:
    return (f"pid {info.get('pid')} on {info.get('host')} ({info.get('command')}), held "
            f"for {age:.0f} s by the server's clock")


class RemoteLock:
    """One writer's lock object in the bucket, refreshed while held."""

    def __init__(self, backend: Bucket, exclusive: bool, where: str) -> None:
        self.backend = backend
        self.exclusive = exclusive
        self.where = where
        self.name = f"locks/{os.urandom(8).hex()}.json"
        self.lifetime = lifetime()
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None
        self._refreshed = time.monotonic()

    def _record(self) -> bytes:
        return json.dumps({
            "exclusive": self.exclusive, "host": os.uname().nodename, "pid": os.getpid(),
            "boot": _boot_id(), "started": _started(os.getpid()),
            "command": " ".join(os.path.basename(a) if i == 0 else a
                                for i, a in enumerate(sys.argv))[:200],
            "time": time.time()}).encode()

    def _conflicts(self, now: float) -> list[tuple[dict[str, object], float]]:
        """Live locks in our way, each with its age by the server's clock at ``now``."""
        found = []
        for name, stamp in list(self.backend.stamps("locks")):
            if name == self.name or now - stamp > self.lifetime:
                continue
            try:
                info = json.loads(self.backend.get(name))
            except (KeyError, ValueError, RecursionError):
                continue  # released meanwhile, or not a lock (or nested past the parser)
            if not isinstance(info, dict):
                continue
            if _dead_here(info):
                logs.event("cloud.lock_taken_over", lock=name, pid=info.get("pid"))
                self.backend.delete(name)
                continue
            if self.exclusive or info.get("exclusive"):
                found.append((info, now - stamp))
        return found

    def acquire(self, wait: float = LOCK_WAIT) -> RemoteLock:
        deadline = time.monotonic() + wait
        told = False
        while True:
            self.backend.put_new(self.name, self._record())
            self._refreshed = time.monotonic()
            conflicts = self._conflicts(self.backend.stamp(self.name))
            if not conflicts:
                break
            self.backend.delete(self.name)
            holder, age = conflicts[0]
            kind = "exclusively" if holder.get("exclusive") else "for writing"
            if time.monotonic() > deadline:
                raise Locked(f"cloud repository {self.where} is locked {kind} by "
                             f"{describe(holder, age)}: wait for it to finish; a dead "
                             f"holder's lock lapses {self.lifetime:.0f} s after its last "
                             "refresh")
            if not told:
                print(f"cairn: waiting for the lock on {self.where}, held {kind} by "
                      f"{describe(holder, age)}", file=sys.stderr)
                told = True
            time.sleep(random.uniform(0.2, 1.0))
        self._refresher = threading.Thread(target=self._refresh, daemon=True)
        self._refresher.start()
        return self

    def _refresh(self) -> None:
        """Rewrite the object every ``lifetime / 6``; after a failure, retry sooner."""
        every = self.lifetime / 6
        pause = every
        while not self._stop.wait(pause):
            try:
                self.backend.put(self.name, self._record())
            except (CairnError, OSError) as exc:
                logs.event("cloud.lock_refresh_failed", lock=self.name, error=str(exc))
                pause = min(every, 5.0)
                continue
            self._refreshed = time.monotonic()
            pause = every

    def check(self) -> None:
        """Raise `LockLost` once the lock may have lapsed in the others' eyes."""
        silent = time.monotonic() - self._refreshed
        if silent > self.lifetime - self.lifetime / 6:
            raise LockLost(f"the lock on {self.where} could not be refreshed for "
                           f"{silent:.0f} s (the bucket refused or did not answer): this "
                           "run stopped before writing more; run it again")

    def release(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        try:
            self.backend.delete(self.name)
        except (CairnError, OSError) as exc:
            # Not over the error that ended the run (often this very bucket's): the object
            # lapses after ``lifetime`` and the next writer takes it over then.
            logs.event("cloud.lock_release_failed", lock=self.name, error=str(exc))
