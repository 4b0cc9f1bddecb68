"""A fault-injecting layer over the real S3 backend (restic's and SQLite's way of testing).

Every call goes to the real server (SeaweedFS in the tests) unless a fault says otherwise:
errors on chosen names, slow answers, truncated or bit-flipped reads, empty or partial
listings, and a PUT that lands but answers an error. Faults are drawn from a seeded random
generator, so a failing run is reproduced by its seed.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cairn.errors import S3Error
from cairn.store.backend import T
from cairn.store.backends.s3 import S3Backend


@dataclass
class Faults:
    fail: re.Pattern[str] | None = None  # names whose PUT/GET/DELETE raise
    fail_puts: re.Pattern[str] | None = None  # names whose PUT raises (reads still answer)
    error_rate: float = 0.0  # any call raises, at this rate
    slow: float = 0.0  # seconds added to every call
    truncate_rate: float = 0.0  # a GET returns 10 bytes short
    flip_rate: float = 0.0  # a GET returns one bit flipped
    listing: str = "full"  # "full", "empty" or "partial" (about half the names dropped)
    land_then_fail_rate: float = 0.0  # a PUT lands, then answers an error
    land_then_fail_first: int = 0  # the first this many PUTs land, then answer an error
    injected: dict[str, int] = field(default_factory=dict)


class FaultyS3:
    def __init__(self, inner: S3Backend, faults: Faults, seed: int = 0) -> None:
        self.inner = inner
        self.faults = faults
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    @property
    def max_object(self) -> int | None:
        return self.inner.max_object

    @max_object.setter
    def max_object(self, value: int | None) -> None:
        self.inner.max_object = value

    def _roll(self, rate: float) -> bool:
        with self._lock:
            return rate > 0 and self._rng.random() < rate

    def _count(self, what: str) -> None:
        with self._lock:
            self.faults.injected[what] = self.faults.injected.get(what, 0) + 1

    def _before(self, action: str, name: str) -> None:
        if self.faults.slow:
            time.sleep(self.faults.slow)
        named = self.faults.fail is not None and self.faults.fail.search(name)
        if named or self._roll(self.faults.error_rate):
            self._count("error")
            raise S3Error(f"injected 503 to {action} {name}", retryable=True)

    def _landed(self, name: str) -> None:
        with self._lock:
            first = self.faults.injected.get("landed", 0) < self.faults.land_then_fail_first
        if first or self._roll(self.faults.land_then_fail_rate):
            self._count("landed")
            raise S3Error(f"injected 500 after PUT {name} landed", retryable=True)

    def _before_put(self, name: str) -> None:
        self._before("PUT", name)
        if self.faults.fail_puts is not None and self.faults.fail_puts.search(name):
            self._count("error")
            raise S3Error(f"injected 403 to PUT {name}", retryable=False)

    def put(self, name: str, data: bytes, replace: bool = False) -> None:
        self._before_put(name)
        self.inner.put(name, data, replace)
        self._landed(name)

    def put_new(self, name: str, data: bytes) -> bool:
        self._before_put(name)
        made = self.inner.put_new(name, data)
        self._landed(name)
        return made

    def get(self, name: str, limit: int | None = None) -> bytes:
        self._before("GET", name)
        return self._spoil(self.inner.get(name, limit))

    def get_range(self, name: str, start: int, end: int) -> bytes:
        self._before("GET", name)
        return self._spoil(self.inner.get_range(name, start, end))

    def _spoil(self, data: bytes) -> bytes:
        """What a read answers: truncated or bit-flipped at the rates the faults say."""
        if data and self._roll(self.faults.truncate_rate):
            self._count("truncated")
            return data[:-10]
        if data and self._roll(self.faults.flip_rate):
            self._count("flipped")
            spoiled = bytearray(data)
            spoiled[self._rng.randrange(len(spoiled))] ^= 1 << self._rng.randrange(8)
            return bytes(spoiled)
        return data

    def get_many(self, names: list[str], each: Callable[[str, bytes], T]) -> Iterator[T]:
        return (each(name, self.get(name)) for name in names)

    def exists(self, name: str) -> bool:
        self._before("HEAD", name)
        return self.inner.exists(name)

    def stamp(self, name: str) -> float:
        self._before("HEAD", name)
        return self.inner.stamp(name)

    def delete(self, name: str) -> None:
        self._before("DELETE", name)
        self.inner.delete(name)

    def delete_many(self, names: list[str]) -> None:
        for name in names:
            self.delete(name)

    def stamps(self, prefix: str, after: str | None = None) -> Iterator[tuple[str, float]]:
        self._before("LIST", prefix)
        if self.faults.listing == "empty":
            self._count("empty listing")
            return iter(())
        listed = list(self.inner.stamps(prefix, after))
        if self.faults.listing == "partial" and listed:
            self._count("partial listing")
            listed = [item for item in listed if self._rng.random() < 0.5]
        return iter(listed)

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        self._before("LIST", prefix)
        return self.inner.sizes(prefix)

    def list(self, prefix: str) -> Iterator[str]:
        return (name for name, _ in self.stamps(prefix))

    def sync(self) -> None:
        self.inner.sync()

    def close(self) -> None:
        self.inner.close()

    def recover(self) -> None:
        self.inner.recover()
