"""The QEMU guest agent (qemu-ga) over its host-side socket: freeze and thaw file systems.

The agent speaks QMP's JSON without a greeting or capability negotiation. A connection may
still hold a reply meant for an earlier client, so the session starts with ``guest-sync``
and a random id, and replies are matched by it. Freezing flushes and blocks every guest file
system until thaw (or the agent's own timeout), so a backup freezes only for the instant of
its QMP transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError

from cairn.errors import SourceError


class GuestAgent:
    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient("cairn-ga")
        self._client.await_greeting = False
        self._client.negotiate = False
        try:
            self._run(self._client.connect(str(path)))
            token = random.randrange(1, 1 << 31)
            if self.execute("guest-sync", {"id": token}) != token:
                raise SourceError(f"the guest agent at {path} answered out of step")
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coro, self.timeout))

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        try:
            return self._run(self._client.execute(command, arguments))
        except (TimeoutError, QMPError, OSError) as exc:
            raise SourceError(f"the guest agent at {self.path} did not do {command} "
                              f"({type(exc).__name__}: {exc}): is qemu-ga running in the guest?"
                              ) from None

    def freeze(self) -> int:
        """Freeze the guest's file systems; returns how many were frozen."""
        return int(self.execute("guest-fsfreeze-freeze"))

    def thaw(self) -> int:
        return int(self.execute("guest-fsfreeze-thaw"))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(asyncio.wait_for(self._client.disconnect(), 2))
        self._loop.close()
