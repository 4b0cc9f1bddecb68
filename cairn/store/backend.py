"""Where chunk bytes live: one small protocol, one class per kind of storage.

A backend is a flat namespace of immutable objects named by strings such as
``chunks/ab1/ab12...``. It knows nothing of hashes, compression or points; the chunk store
above it does. Contract, for every implementation:

- ``put`` is all-or-nothing: a reader sees the whole object or no object, never a prefix.
  Writing the same name twice with the same bytes is harmless (content addressing makes
  concurrent writers of one chunk agree). ``replace=True`` says a stored copy is damaged
  and this one must take its place; without it a backend may keep either copy.
- ``sync`` makes every completed ``put`` and ``delete`` durable; the catalog commits a point
  only after ``sync`` returned.
- ``get`` of a missing name raises ``KeyError``; ``delete`` of a missing name is not an error.
- ``list`` raising must abort any garbage collection built on it, never be read as "empty".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")


class Backend(Protocol):
    def put(self, name: str, data: bytes, replace: bool = False) -> None: ...

    def get(self, name: str) -> bytes: ...

    def get_many(self, names: list[str], each: Callable[[str, bytes], T]) -> Iterator[T]:
        """``each(name, bytes)`` for every name, run on the backend's reading threads and
        yielded in whatever order reads the storage fastest (a restore writes each block
        where it belongs, so it does not care): one object per request where that is all
        the storage offers, neighbours in one read where it can."""
        ...

    def exists(self, name: str) -> bool: ...

    def delete(self, name: str) -> None: ...

    def delete_many(self, names: list[str]) -> None:
        """`delete` each name, in whatever batches or parallelism suit the storage."""
        ...

    def list(self, prefix: str) -> Iterator[str]: ...

    def sync(self) -> None: ...

    def close(self) -> None:
        """Release what the backend holds open; it is not used afterwards."""
        ...

    def recover(self) -> None:
        """Remove what writers that died before their ``sync`` left behind."""
        ...

