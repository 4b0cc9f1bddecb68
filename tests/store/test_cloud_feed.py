"""Incremental listings (`cloud_feed`) against a real S3 server: what is new, and only that."""

from __future__ import annotations

import time
import uuid

from cairn.store import cloud_feed
from cairn.store.backends.s3 import S3Backend
from tests.s3server import SeaweedS3


def _backend(server: SeaweedS3) -> S3Backend:
    return S3Backend(server.bucket, uuid.uuid4().hex, endpoint_url=server.endpoint,
                     access_key=server.access_key, secret_key=server.secret_key)


def test_since_lists_only_names_after_the_cursor_less_the_window(s3_server: SeaweedS3) -> None:
    bucket = _backend(s3_server)
    now = time.time()
    old = [f"index/{cloud_feed.new_key(now - 3 * cloud_feed.WINDOW - i)}" for i in range(5)]
    recent = [f"index/{cloud_feed.new_key(now - cloud_feed.WINDOW / 2)}",
              f"index/{cloud_feed.new_key(now)}"]
    for name in [*old, *recent, "indexes/not-this-prefix"]:
        bucket.put(name, b"x")

    everything = [name for name, _ in cloud_feed.since(bucket, "index", None)]
    assert sorted(everything) == sorted(old + recent)
    cursor = cloud_feed.newest(everything, None)
    assert cursor is not None and abs(cursor - now) < 1e-3
    new = [name for name, _ in cloud_feed.since(bucket, "index", cursor)]
    assert sorted(new) == sorted(recent)  # the window lists the recent ones again, not the old
    assert cloud_feed.newest(new, cursor) == cursor


def test_a_slow_clock_takes_the_servers_time() -> None:
    clock = cloud_feed.Clock()
    clock.learn(time.time() + 3600)
    assert clock.now() - time.time() > 3599
    clock.learn(time.time() - 3600)  # a server behind us changes nothing
    assert clock.now() - time.time() > 3599
