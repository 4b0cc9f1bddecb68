"""The Object Lock probe against a real SeaweedFS: it claims immutability only where a locked
version really cannot be deleted, and refuses a bucket that cannot lock, saying why."""

from __future__ import annotations

import pytest

from cairn.errors import UsageError
from cairn.store.backends.s3 import S3Backend
from cairn.store.backends.s3_lock import PROBE_PREFIX, probe_object_lock, require_object_lock
from tests.s3server import SeaweedS3


def backend(server: SeaweedS3, bucket: str) -> S3Backend:
    return S3Backend(bucket, "offsite", endpoint_url=server.endpoint,
                     access_key=server.access_key, secret_key=server.secret_key)


def test_a_bucket_without_object_lock_is_refused_and_left_clean(s3_server: SeaweedS3) -> None:
    plain = backend(s3_server, s3_server.make_bucket("lock-probe-plain"))
    with pytest.raises(UsageError, match="cannot hold immutable points: a PUT with Object "
                                         "Lock retention was refused"):
        require_object_lock(plain)
    assert list(plain.list(PROBE_PREFIX)) == []


def test_a_bucket_that_enforces_object_lock_keeps_the_locked_probe(
        s3_server: SeaweedS3) -> None:
    s3 = s3_server.client()
    s3.create_bucket(Bucket="lock-probe-locked", ObjectLockEnabledForBucket=True)
    locked = backend(s3_server, "lock-probe-locked")
    probe = probe_object_lock(locked)
    assert probe.enforced and "refused" in probe.reason
    versions = s3.list_object_versions(Bucket="lock-probe-locked").get("Versions", [])
    assert len(versions) == 1 and versions[0]["Key"].startswith(f"offsite/{PROBE_PREFIX}/")
    with pytest.raises(Exception, match=r"AccessDenied|locked|retention|WORM"):
        s3.delete_object(Bucket="lock-probe-locked", Key=versions[0]["Key"],
                         VersionId=versions[0]["VersionId"])
