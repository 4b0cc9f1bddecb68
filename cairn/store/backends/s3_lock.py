"""S3 Object Lock: does this bucket really refuse to delete a locked object?

Immutability cannot be claimed from a configuration answer: some S3 servers accept the
Object Lock headers and then delete the object anyway. So the probe does what an attacker
with the appliance's credentials would do: it PUTs a tiny object under a COMPLIANCE
retention of one day (``.cairn-object-lock-probe/<random>``), then asks to DELETE that very
version. The bucket enforces Object Lock only if the PUT returned a version id, the server
kept the retention, and the DELETE of the version was refused. On a bucket that enforces
it, the probe object stays for a day (a few bytes); anywhere else it is removed.

`require_object_lock` is what ``offsite set --immutable`` calls before it promises anything:
a bucket that does not enforce is refused with the reason.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import httpx

from cairn.errors import S3Error, S3Unreachable, UsageError
from cairn.store.backends.s3 import S3Backend
from cairn.store.backends.s3_bucket import Credentials, signed_headers

PROBE_PREFIX = ".cairn-object-lock-probe"
PROBE_DAYS = 1


@dataclass(frozen=True)
class LockProbe:
    enforced: bool
    reason: str


def _request(backend: S3Backend, method: str, key: str, query: str = "",
             extra: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    url = f"{backend.endpoint}/{backend.bucket}/{key}" + (f"?{query}" if query else "")
    headers = signed_headers(method, url, body, Credentials(*backend._credentials), extra=extra)
    try:
        return httpx.request(method, url, content=body, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        raise S3Unreachable(backend.endpoint, str(exc) or type(exc).__name__) from None


def probe_object_lock(backend: S3Backend) -> LockProbe:
    """Put a probe object under COMPLIANCE retention and try to delete its version."""
    key = "/".join(filter(None, [backend.prefix, PROBE_PREFIX, os.urandom(8).hex()]))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + PROBE_DAYS * 86400))
    put = _request(backend, "PUT", key, extra={"x-amz-object-lock-mode": "COMPLIANCE",
                                               "x-amz-object-lock-retain-until-date": until},
                   body=b"cairn object lock probe\n")
    if put.status_code >= 300:
        return LockProbe(False, f"a PUT with Object Lock retention was refused (HTTP "
                                f"{put.status_code}): the bucket was not made with Object "
                                "Lock enabled")
    version = put.headers.get("x-amz-version-id")
    if not version or version == "null":
        _request(backend, "DELETE", key)
        return LockProbe(False, "the bucket keeps no object versions, so nothing can be locked")
    deleted = _request(backend, "DELETE", key, query=f"versionId={version}")
    if deleted.status_code < 300:
        return LockProbe(False, "the server accepted Object Lock retention and then deleted "
                                "the locked version anyway: it does not enforce Object Lock")
    if deleted.status_code >= 500:
        raise S3Error(f"{backend.endpoint} answered HTTP {deleted.status_code} to deleting the "
                      "lock probe: see the object store's logs", retryable=True)
    return LockProbe(True, f"deleting a locked version was refused (HTTP "
                           f"{deleted.status_code})")


def require_object_lock(backend: S3Backend) -> LockProbe:
    """The probe's answer if the bucket enforces Object Lock; `UsageError` naming why not."""
    probe = probe_object_lock(backend)
    if not probe.enforced:
        raise UsageError(f"bucket {backend.bucket!r} at {backend.endpoint} cannot hold "
                         f"immutable points: {probe.reason}; use a bucket created with "
                         "Object Lock enabled (AWS S3, Ceph RGW, MinIO), or offsite without "
                         "--immutable")
    return probe
