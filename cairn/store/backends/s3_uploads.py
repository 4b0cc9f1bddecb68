"""Multipart uploads a killed writer left behind: listed, and aborted once old.

`S3Backend.put` sends a pack as a multipart upload. One that fails is aborted on the spot,
but a writer killed between CreateMultipartUpload and CompleteMultipartUpload leaves its
upload open: no object appears (readers and the prune never see a partial pack), yet the
server keeps its parts, and a provider bills them, until someone aborts it. AWS can do that
with a lifecycle rule (AbortIncompleteMultipartUpload); SeaweedFS has none, so the cloud
prune calls `abort_stale`: every upload under the repository's prefix that the server says
was initiated more than the grace window ago is aborted. A live writer's upload of one pack
takes seconds, far less than the window (30 min by default), so none is cut short; and an
upload aborted under a writer only fails that writer's `sync` (its point is not published).

obstore has no call for these two requests, so they are signed here (`s3_bucket`'s SigV4),
like the Object Lock ones: ListMultipartUploads (``GET ?uploads``, following its markers)
and AbortMultipartUpload (``DELETE ?uploadId=``). Ages are the server's ``Initiated``
against the server's time, never this host's clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote
from xml.etree import ElementTree

import httpx

from cairn import logs
from cairn.errors import S3AccessDenied, S3Error, S3Unreachable
from cairn.store.backends.s3 import S3Backend
from cairn.store.backends.s3_bucket import signed_headers


@dataclass(frozen=True)
class Upload:
    """An open multipart upload: its object name (under the backend's prefix), its id and
    the server's time it was initiated (seconds since the epoch)."""

    name: str
    id: str
    initiated: float


def _send(backend: S3Backend, method: str, key: str, query: str) -> httpx.Response:
    url = "/".join(filter(None, [backend.endpoint, backend.bucket, key])) + f"?{query}"
    headers = signed_headers(method, url, b"", backend.credentials)
    try:
        answer = httpx.request(method, url, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        raise S3Unreachable(backend.endpoint, str(exc) or type(exc).__name__) from None
    if answer.status_code in (401, 403):
        raise S3AccessDenied(backend.endpoint, backend.bucket,
                             f"HTTP {answer.status_code} to {method} ?{query.split('=')[0]}")
    return answer


def _text(element: ElementTree.Element, tag: str) -> str:
    for child in element:
        if child.tag.rpartition("}")[2] == tag:
            return child.text or ""
    return ""


def uploads(backend: S3Backend) -> Iterator[Upload]:
    """Every open multipart upload under the backend's prefix (all pages)."""
    prefix = f"{backend.prefix}/" if backend.prefix else ""
    markers = ""
    while True:
        answer = _send(backend, "GET", "", f"{markers}prefix={quote(prefix, safe='')}&uploads=")
        if answer.status_code >= 300:
            raise S3Error(f"{backend.endpoint} answered HTTP {answer.status_code} to listing "
                          f"the multipart uploads in bucket {backend.bucket!r}: see the object "
                          "store's logs", retryable=answer.status_code >= 500)
        root = ElementTree.fromstring(answer.content)
        for element in root:
            if element.tag.rpartition("}")[2] == "Upload":
                stamp = datetime.fromisoformat(_text(element, "Initiated")).timestamp()
                yield Upload(_text(element, "Key").removeprefix(prefix),
                             _text(element, "UploadId"), stamp)
        key, upload = _text(root, "NextKeyMarker"), _text(root, "NextUploadIdMarker")
        if _text(root, "IsTruncated") != "true" or not (key or upload):
            return
        markers = (f"key-marker={quote(key, safe='')}&"
                   f"upload-id-marker={quote(upload, safe='')}&")


def abort(backend: S3Backend, upload: Upload) -> None:
    """AbortMultipartUpload: the server drops the parts; one already gone is fine."""
    key = "/".join(filter(None, [backend.prefix, upload.name]))
    answer = _send(backend, "DELETE", key, f"uploadId={quote(upload.id, safe='')}")
    if answer.status_code >= 300 and answer.status_code != 404:
        raise S3Error(f"{backend.endpoint} answered HTTP {answer.status_code} to aborting the "
                      f"multipart upload of {upload.name} in bucket {backend.bucket!r}: see "
                      "the object store's logs", retryable=answer.status_code >= 500)


def abort_stale(backend: S3Backend, grace: float, now: float) -> int:
    """Abort every upload initiated more than ``grace`` seconds before ``now`` (the
    server's time); returns how many."""
    stale = [u for u in uploads(backend) if now - u.initiated > grace]
    for upload in stale:
        abort(backend, upload)
    if stale:
        logs.event("cloud.uploads_aborted", bucket=backend.bucket, prefix=backend.prefix,
                   count=len(stale))
    return len(stale)
