"""Pulling a point from a cloud repository into a local one: replication in reverse.

Used when an appliance is rebuilt from its bucket (`appliance.recovery`): the newest point
of each volume comes back so agents find their parent and go on with incremental backups.
Chunks travel as stored (both repositories use the same key), each checked against its
hash on arrival, made durable, and only then is the point committed locally, with its
runs counted as for any point (`Cloud.insert`) and, as its ``bytes_stored``, what it added
here (not what it added to the bucket).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from cairn.store.blockmap import NodeCache, diff
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO, chunk_name
from cairn.store.cloud import Cloud
from cairn.store.repository import Repository

WORKERS = 8


def pull_point(cloud: Repository, local: Repository, point: RecoveryPoint) -> int:
    """Copy ``point`` (a point of ``cloud``) into ``local``; returns the bytes fetched."""
    nodes = NodeCache(cloud.chunks.get)
    known = local.catalog.chunk_refs()
    needed = {h for _slot, _old, h in diff(nodes, None, cloud.tree(point))
              if h is not None and h != ZERO and h not in known}

    def fetch(digest: bytes) -> tuple[bytes, int, int]:
        stored = cloud.chunks.backend.get(chunk_name(digest))
        size = len(cloud.chunks.decode(digest, stored))
        local.chunks.backend.put(chunk_name(digest), stored)
        return digest, size, len(stored)

    written: dict[bytes, tuple[int, int]] = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        for digest, size, stored in pool.map(fetch, needed):
            written[digest] = (size, stored)
    local.chunks.backend.sync()
    volume = local.catalog.ensure_volume(point.volume)
    fetched = sum(stored for _, stored in written.values())
    Cloud.insert(local, replace(point, volume_id=volume.id, bytes_stored=fetched), written)
    return fetched
