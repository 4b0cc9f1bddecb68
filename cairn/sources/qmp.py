"""A blocking session with a running QEMU's monitor (QMP), built on PyPI's ``qemu.qmp``.

``qemu.qmp`` is asyncio; a backup runs in a plain thread (the CLI, an appliance job), so each
`Monitor` owns a private event loop and runs every call to completion under a timeout. That
timeout is what turns a socket that accepts but never speaks (not QEMU, or a hung QEMU) into a
clear error instead of a hang. Events QEMU sends between replies (jobs finishing, exports
going away) are kept by one listener and can be waited for by name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import ConnectError, EventListener, ExecuteError, QMPClient, QMPError

from cairn.errors import SourceError, VirtualMachineError

T = TypeVar("T")
Event = dict[str, Any]


class CommandFailed(VirtualMachineError):
    """QEMU answered a command with an error; ``error_class`` is QMP's class for it."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"QEMU refused {command}: {desc}")
        self.error_class = error_class
        self.desc = desc


class Monitor:
    """One QMP connection; `close` (or the context manager) ends it."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient("cairn")
        self._events = EventListener()
        self._client.register_listener(self._events)
        try:
            self._run(self._client.connect(str(path)))
        except BaseException as exc:
            self._shutdown()
            raise _connect_error(path, exc, timeout) from None

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout or self.timeout))

    def execute(self, command: str, arguments: dict[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        """Run one command and return what it returns; QEMU's refusal is `CommandFailed`."""
        try:
            return self._run(self._client.execute(command, arguments), timeout)
        except ExecuteError as exc:
            raise CommandFailed(command, exc.error_class, str(exc)) from None
        except (TimeoutError, QMPError, OSError) as exc:
            raise VirtualMachineError(f"QEMU's monitor at {self.path} stopped answering "
                                      f"during {command} ({type(exc).__name__}): check that "
                                      "the VM still runs") from None

    def hmp(self, command: str) -> str:
        """A human monitor command (e.g. ``qemu-io``); its output, which is where HMP errors go."""
        return str(self.execute("human-monitor-command", {"command-line": command}))

    def wait_event(self, name: str, match: Callable[[Event], bool], timeout: float) -> Event:
        """The first ``name`` event (already received or coming) for which ``match`` holds."""

        async def wait() -> Event:
            while True:
                event: Event = dict(await self._events.get())
                if event.get("event") == name and match(event.get("data", {})):
                    return event

        try:
            return self._run(wait(), timeout)
        except TimeoutError:
            raise VirtualMachineError(f"QEMU did not send {name} within {timeout:.0f} s"
                                      ) from None

    def _shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(asyncio.wait_for(self._client.disconnect(), 2))
        self._loop.close()

    def close(self) -> None:
        self._shutdown()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect_error(path: Path, exc: BaseException, timeout: float) -> BaseException:
    """The one-line error for a monitor socket that could not be reached or spoke nonsense."""
    if not isinstance(exc, Exception):
        return exc  # KeyboardInterrupt and friends pass through untouched
    hint = f"start QEMU with -qmp unix:{path},server=on,wait=off"
    if not path.exists():
        return SourceError(f"no QEMU monitor socket at {path}: {hint}")
    if isinstance(exc, TimeoutError):
        return SourceError(f"{path} did not answer as a QEMU monitor (QMP) within {timeout:g} "
                           "s: give a -qmp socket no other client holds (QEMU serves one "
                           "client per socket; add another -qmp for cairn)")
    if isinstance(exc, ConnectError) and isinstance(exc.exc, OSError):
        return SourceError(f"cannot connect to the QEMU monitor at {path} "
                           f"({exc.exc.strerror or exc.exc}): {hint}")
    return SourceError(f"{path} is not a QEMU monitor (QMP) socket ({exc}): give the socket "
                       "of QEMU's -qmp option")
