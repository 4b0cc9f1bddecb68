"""The appliance's background loops (scheduler, offsite copies, verifications): a daemon
thread that calls ``tick(now)`` every ``tick_seconds`` until stopped. A tick that raises
is logged and the loop goes on: one bad pass never stops the appliance acting on its own.
"""

from __future__ import annotations

import threading
import time

from cairn import logs


class Ticker:
    name = "loop"

    def __init__(self, tick_seconds: float, stop_timeout: float = 30.0) -> None:
        self.tick_seconds = tick_seconds
        self.stop_timeout = stop_timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.stop_timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def tick(self, now: float) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            try:
                self.tick(time.time())
            except Exception:
                logs.log.exception(f"{self.name} pass failed")
