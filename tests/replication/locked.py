"""What the Object Lock tests of convert and prune share: the bucket's versions and locks
read with the server's own client, its clock, and a fresh node restoring every point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cairn.store.cloud import open_cloud
from cairn.store.verify import verify
from tests.store.helpers import restored_digest


def versions(s3: Any, bucket: str, prefix: str) -> tuple[list[str], list[str]]:
    """The keys of every version under ``prefix``, and of every delete marker."""
    listing = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return ([v["Key"] for v in listing.get("Versions", [])],
            [m["Key"] for m in listing.get("DeleteMarkers", [])])


def locked_until(s3: Any, bucket: str, key: str) -> float:
    held = s3.get_object_retention(Bucket=bucket, Key=key)["Retention"]
    return float(held["RetainUntilDate"].timestamp())


def server_time(s3: Any, bucket: str) -> float:
    """The server's clock, which decides when a lock has passed (not this machine's)."""
    s3.put_object(Bucket=bucket, Key="clock", Body=b"")
    return float(s3.head_object(Bucket=bucket, Key="clock")["LastModified"].timestamp())


def restores_whole(url: str, want: dict[str, str], cache: Path, *, check: bool = False) -> None:
    """A node with its own cache at ``cache`` lists exactly the points of ``want`` and
    restores each to its digest (and, with ``check``, verifies every chunk's data)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CAIRN_CACHE", str(cache))
        with open_cloud(url, None) as reader:
            for point in reader.catalog.points():
                assert restored_digest(reader, point, cache.with_suffix(".img")) == \
                    want[point.id]
            if check:
                assert verify(reader, read_data=True).ok
