"""Many point records in a cloud repository, cheaply: copies of one real point's record.

A sync's cost grows with the number of points a repository holds, not with their data: so
a repository of thousands of points is made from one replicated point, its record sealed
again under new ids and times (every copy reads the same block map and chunks, so each is a
real, restorable point). For the sync tests and `bench/cloud_sync_bench.py`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from cairn.store import cloud_feed, cloud_sync
from cairn.store.catalog import RecoveryPoint
from cairn.store.cloud import Cloud, point_object
from cairn.store.parallel import bounded_map
from cairn.store.repository import Repository


def _cloud(repo: Repository) -> Cloud:
    assert isinstance(repo.remote, Cloud)
    return repo.remote


def plant_points(repo: Repository, template: RecoveryPoint, count: int,
                 announce: bool = True, announced_at: float | None = None) -> list[str]:
    """Put ``count`` copies of ``template``'s record (new ids, one second apart after it)
    into the bucket, each announced in the feed unless ``announce`` is False (what a
    repository written before the feed holds), at ``announced_at`` (a writer's time: the
    past, for a repository's history) or now; returns their ids."""
    cloud = _cloud(repo)
    ids = [os.urandom(6).hex() for _ in range(count)]

    def put(item: tuple[int, str]) -> None:
        n, point_id = item
        point = RecoveryPoint(**{**template.__dict__, "id": point_id,
                                 "created": template.created + n + 1})
        record: dict[str, Any] = point.public()
        record["root"] = point.root.hex()
        record["repository"] = cloud.repository_id
        name = point_object(point)
        cloud.backend.put(name, json.dumps(cloud.sealer.seal(record)).encode())
        if announce and announced_at is None:
            cloud.announce("put", name)
        elif announce:
            key = cloud_feed.new_key(announced_at + n / 1000)
            cloud.backend.put(cloud_sync.entry(key, "put", name), b"")

    for _ in bounded_map(put, enumerate(ids), 16):
        pass
    return ids


class Requests:
    """Counts the requests a cloud repository's bucket is asked, by kind, from now on."""

    KINDS = ("stamps", "get", "exists", "stamp", "put", "put_new", "delete", "delete_many",
             "sizes")

    def __init__(self, repo: Repository) -> None:
        self.counts: dict[str, int] = {}
        self.names = 0
        """names the listings returned (`take_names`)"""
        backend = _cloud(repo).backend
        for kind in self.KINDS:
            setattr(backend, kind, self._counting(kind, getattr(backend, kind)))

    def _counting(self, kind: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            result = real(*args, **kwargs)
            if not isinstance(result, Iterator):
                return result
            items = list(result)
            self.names += len(items)
            return items

        return call

    def take(self) -> dict[str, int]:
        """The counts so far, reset."""
        counts, self.counts = self.counts, {}
        return counts

    def take_names(self) -> int:
        """The names listed so far, reset."""
        names, self.names = self.names, 0
        return names


def feed_names(repo: Repository) -> list[str]:
    return [n for n, _ in cloud_feed.since(_cloud(repo).backend, cloud_sync.FEED, None)]
