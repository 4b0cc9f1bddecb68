"""S3 Object Lock: does this bucket really refuse to delete a locked object?

Immutability cannot be claimed from a configuration answer: some S3 servers accept the
Object Lock headers and then delete the object anyway. So the probe does what an attacker
with the appliance's credentials would do: it PUTs a tiny object under a COMPLIANCE
retention of one day (``.cairn-object-lock-probe/<random>``), then asks to DELETE that very
version. The bucket enforces Object Lock only if the PUT returned a version id, the server
kept the retention, and the DELETE of the version was refused. On a bucket that enforces
it, the probe object stays for a day (a few bytes); anywhere else it is removed.

`require_object_lock` is what ``offsite set --immutable`` calls before it promises anything:
a bucket that does not enforce is refused with the reason. `Retention` then sets and extends
the locks of cairn's objects (`cairn.store.immutable` decides which, and when).
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import math
import os
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import httpx

from cairn.errors import Corruption, S3Error, S3Unreachable, UsageError
from cairn.store.backends.s3 import S3Backend
from cairn.store.backends.s3_bucket import signed_headers, versioning_enabled

PROBE_PREFIX = ".cairn-object-lock-probe"
PROBE_DAYS = 1
_RETAIN = re.compile(r"<RetainUntilDate>([^<]+)</RetainUntilDate>")


@dataclass(frozen=True)
class Entry:
    """One version (or delete marker) of an object in a versioned bucket."""

    name: str
    version: str
    marker: bool
    latest: bool


@dataclass(frozen=True)
class LockProbe:
    enforced: bool
    reason: str


def _request(backend: S3Backend, method: str, key: str, query: str = "",
             extra: dict[str, str] | None = None, body: bytes = b"") -> httpx.Response:
    url = f"{backend.endpoint}/{backend.bucket}/{key}" + (f"?{query}" if query else "")
    headers = signed_headers(method, url, body, backend.credentials, extra=extra)
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


def _stored_only(server: str, bucket: str) -> str | None:
    """What a server that keeps a lifecycle rule without acting on it by itself leaves the
    user to do. SeaweedFS (4.48 here) stores the rule, but only its lifecycle worker
    expires versions: an ``s3_lifecycle`` job that ``weed admin`` schedules on a ``weed
    worker``, or ``s3.lifecycle.run-shard`` in ``weed shell``; ``weed server -s3`` alone
    never deletes a version. (The worker skips versions still under Object Lock.)"""
    if not server.startswith("SeaweedFS"):
        return None
    return (f"bucket {bucket!r} is on {server}, which stores the lifecycle rule but expires "
            "old versions only when its lifecycle worker runs (`weed admin` with a `weed "
            "worker`, or `s3.lifecycle.run-shard` in `weed shell`): without it, overwritten "
            "and deleted objects' versions stay until removed")


def _children(root: ElementTree.Element, tag: str) -> list[ElementTree.Element]:
    return [e for e in root if e.tag.rpartition("}")[2] == tag]


def _text(element: ElementTree.Element, tag: str) -> str:
    found = [e.text or "" for e in element if e.tag.rpartition("}")[2] == tag]
    return found[0] if found else ""


def _date(when: float) -> str:
    """An S3 retain-until date, rounded up to the second (never earlier than asked)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(when)))


def _md5(body: bytes) -> str:
    """Content-MD5, which AWS requires on every request that sets Object Lock retention."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


class Retention:
    """COMPLIANCE retention on the objects of one bucket, by signed requests (obstore cannot
    send Object Lock headers). ``extensions`` counts the requests that exist only to keep
    objects locked (retention extended or read back), the price of immutability beyond the
    writes an unlocked copy makes anyway; safe to share between threads. `unhide` undoes a
    delete that Object Lock made harmless: on a locked bucket a DELETE only puts a delete
    marker over the object, whose locked version stays."""

    def __init__(self, backend: S3Backend) -> None:
        self.backend = backend
        self.extensions = 0
        self._count = threading.Lock()
        self._client = httpx.Client(timeout=60.0)

    def close(self) -> None:
        self._client.close()

    def _send(self, method: str, name: str, query: str = "", body: bytes = b"",
              extra: dict[str, str] | None = None) -> httpx.Response:
        key = "/".join(filter(None, [self.backend.prefix, name]))
        url = (f"{self.backend.endpoint}/{self.backend.bucket}/{key}"
               + (f"?{query}" if query else ""))
        for attempt in (1, 2):
            headers = signed_headers(method, url, body, self.backend.credentials,
                                     extra=extra)
            try:
                answer = self._client.request(method, url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                if attempt == 2:
                    raise S3Unreachable(self.backend.endpoint,
                                        str(exc) or type(exc).__name__) from None
                continue
            if answer.status_code < 500 or attempt == 2:
                return answer
        raise AssertionError("unreachable")

    def _refused(self, answer: httpx.Response, what: str) -> S3Error:
        return S3Error(f"{self.backend.endpoint} answered HTTP {answer.status_code} to {what} "
                       f"in bucket {self.backend.bucket!r}: {answer.text[:200]}",
                       retryable=answer.status_code >= 500)

    def put(self, name: str, data: bytes, until: float, only_new: bool = False) -> bool:
        """PUT ``name`` locked until ``until`` in one request; with ``only_new`` only where
        it does not exist yet (False when it does)."""
        extra = {"content-md5": _md5(data), "x-amz-object-lock-mode": "COMPLIANCE",
                 "x-amz-object-lock-retain-until-date": _date(until)}
        if only_new:
            extra["if-none-match"] = "*"
        answer = self._send("PUT", name, body=data, extra=extra)
        if only_new and answer.status_code == 412:
            return False
        if answer.status_code >= 300:
            raise self._refused(answer, f"a locked PUT of {name}")
        return True

    def extend(self, name: str, until: float) -> float:
        """Keep ``name`` locked until at least ``until``; returns the date it now holds. A
        retention already later is kept (S3 refuses to shorten one): its date is read."""
        body = ('<Retention xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Mode>COMPLIANCE'
                f"</Mode><RetainUntilDate>{_date(until)}</RetainUntilDate></Retention>").encode()
        self._counted()
        answer = self._send("PUT", name, "retention=", body, {"content-md5": _md5(body)})
        if answer.status_code == 404:
            raise KeyError(name)
        if answer.status_code < 300:
            return float(math.ceil(until))
        held = self.until(name) if answer.status_code == 403 else None
        if held is None or held < until:
            raise self._refused(answer, f"extending the retention of {name}")
        return held

    def until(self, name: str, version: str | None = None) -> float | None:
        """The date ``name`` (its ``version``, else the current one) is locked until, None
        when it is not locked."""
        self._counted()
        query = "retention=" + (f"&versionId={quote(version, safe='')}" if version else "")
        answer = self._send("GET", name, query)
        if answer.status_code == 404:
            return None
        if answer.status_code >= 300:
            raise self._refused(answer, f"reading the retention of {name}")
        found = _RETAIN.search(answer.text)
        if found is None:
            return None
        return calendar.timegm(time.strptime(found.group(1)[:19], "%Y-%m-%dT%H:%M:%S"))

    def _bucket_get(self, query: str, what: str) -> ElementTree.Element:
        answer = self._send_bucket("GET", query)
        if answer.status_code >= 300:
            raise self._refused(answer, what)
        return ElementTree.fromstring(answer.text)

    def versioned(self) -> bool:
        """Whether the bucket keeps versions (`s3_bucket.versioning_enabled`)."""
        return versioning_enabled(self.backend.endpoint, self.backend.bucket,
                                  self.backend.credentials)

    def lock_enabled(self) -> bool:
        """Whether the bucket was made with Object Lock (only then can a PUT be locked)."""
        try:
            root = self._bucket_get("object-lock=", "reading the bucket's Object Lock")
        except S3Error:
            return False
        return _text(root, "ObjectLockEnabled") == "Enabled"

    def entries(self, prefix: str) -> list[Entry]:
        """Every version and delete marker under ``prefix`` (names as cairn gives them),
        from one paged listing."""
        base = "/".join(filter(None, [self.backend.prefix, prefix])) + "/"
        strip = len(self.backend.prefix) + 1 if self.backend.prefix else 0
        found: list[Entry] = []
        marker = ""
        while True:
            root = self._bucket_get(f"prefix={quote(base, safe='')}&versions={marker}",
                                    f"listing the versions under {prefix}/")
            found += [Entry(_text(e, "Key")[strip:], _text(e, "VersionId"),
                            e.tag.endswith("DeleteMarker"), _text(e, "IsLatest") == "true")
                      for e in root if e.tag.rpartition("}")[2] in ("Version", "DeleteMarker")]
            if _text(root, "IsTruncated") != "true":
                return found
            marker = (f"&key-marker={quote(_text(root, 'NextKeyMarker'), safe='')}"
                      f"&version-id-marker={quote(_text(root, 'NextVersionIdMarker'), safe='')}")

    def hidden(self, prefix: str) -> list[str]:
        """The objects under ``prefix`` whose newest entry is a delete marker: deleted by
        someone, their versions possibly still there."""
        return [e.name for e in self.entries(prefix) if e.marker and e.latest]

    def lifecycle(self, days: int) -> str | None:
        """Make the bucket expire versions ``days`` after they stop being current (its
        locked ones only once their lock passes), so overwritten and deleted objects do not
        pile up; None when that holds now, else what the user must do (cairn never
        replaces lifecycle rules someone else set)."""
        answer = self._send_bucket("GET", "lifecycle=")
        if answer.status_code < 300:
            if "<NoncurrentVersionExpiration>" in answer.text:
                return _stored_only(answer.headers.get("server", ""), self.backend.bucket)
            return (f"bucket {self.backend.bucket!r} has lifecycle rules but none expires "
                    "noncurrent versions: add a rule with NoncurrentVersionExpiration "
                    f"(NoncurrentDays {days}) to them, or old versions pile up")
        body = ('<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                "<Rule><ID>cairn-noncurrent-versions</ID><Filter><Prefix>"
                f"{escape(self.backend.prefix + '/' if self.backend.prefix else '')}"
                "</Prefix></Filter><Status>Enabled</Status>"
                f"<NoncurrentVersionExpiration><NoncurrentDays>{days}</NoncurrentDays>"
                "</NoncurrentVersionExpiration></Rule></LifecycleConfiguration>").encode()
        put = self._send_bucket("PUT", "lifecycle=", body)
        if put.status_code >= 300:
            return (f"bucket {self.backend.bucket!r} refused a lifecycle rule (HTTP "
                    f"{put.status_code}): set NoncurrentVersionExpiration ({days} days) on it "
                    "yourself, or old versions pile up")
        return _stored_only(put.headers.get("server", ""), self.backend.bucket)

    def _send_bucket(self, method: str, query: str, body: bytes = b"") -> httpx.Response:
        url = f"{self.backend.endpoint}/{self.backend.bucket}?{query}"
        extra = {"content-md5": _md5(body)} if body else None
        headers = signed_headers(method, url, body, self.backend.credentials,
                                 extra=extra)
        return self._client.request(method, url, content=body, headers=headers)

    def _versions(self, name: str) -> tuple[list[ElementTree.Element], list[ElementTree.Element]]:
        """The versions of ``name`` (oldest first) and its delete markers."""
        key = "/".join(filter(None, [self.backend.prefix, name]))
        root = self._bucket_get(f"prefix={quote(key, safe='')}&versions=",
                                f"listing the versions of {name}")
        markers = [m for m in _children(root, "DeleteMarker") if _text(m, "Key") == key]
        versions = sorted((v for v in _children(root, "Version") if _text(v, "Key") == key),
                          key=lambda v: _text(v, "LastModified"))
        return versions, markers

    def held_until(self, name: str) -> float | None:
        """The latest date any version of ``name`` is locked until (its current one, or
        one a delete marker hides), None when none is locked: what must pass before every
        version of it can be deleted."""
        versions, _markers = self._versions(name)
        dates = [self.until(name, _text(v, "VersionId")) for v in versions]
        return max((d for d in dates if d is not None), default=None)

    def forget(self, name: str) -> None:
        """After a DELETE of ``name`` in a versioned bucket: delete its versions too, so
        the space is really freed; a version still locked stays (with the marker over it),
        as Object Lock promised."""
        versions, markers = self._versions(name)
        kept = False
        for version in versions:
            answer = self._send("DELETE", name,
                                f"versionId={quote(_text(version, 'VersionId'), safe='')}")
            kept = kept or answer.status_code >= 300
        for marker in [] if kept else markers:
            self._send("DELETE", name, f"versionId={quote(_text(marker, 'VersionId'), safe='')}")

    def restore(self, name: str) -> bool:
        """Remove the delete markers over ``name`` when a version of it is still there,
        locked or not: the object is back as it was (the prune's, for a pack a point
        needs); True when done."""
        versions, markers = self._versions(name)
        if not versions or not markers:
            return False
        for marker in markers:
            gone = self._send("DELETE", name,
                              f"versionId={quote(_text(marker, 'VersionId'), safe='')}")
            if gone.status_code >= 300:
                raise self._refused(gone, f"removing the delete marker of {name}")
        return True

    def keep_latest(self, name: str) -> None:
        """Delete every version of ``name`` but the current one: an object written again
        at every run (a clock) keeps one version, not one per run."""
        versions, markers = self._versions(name)
        for old in [*markers, *versions]:
            if _text(old, "IsLatest") != "true":
                self._send("DELETE", name,
                           f"versionId={quote(_text(old, 'VersionId'), safe='')}")

    def _locked_under_marker(self, name: str, now: float) -> tuple[str, str] | None:
        """(version, marker) when ``name`` is hidden behind a delete marker while its newest
        version is still locked after ``now``; else None."""
        versions, markers = self._versions(name)
        markers = [m for m in markers if _text(m, "IsLatest") == "true"]
        if not markers or not versions:
            return None
        version = _text(versions[-1], "VersionId")
        until = self.until(name, version)
        if until is None or until <= now:
            return None
        return version, _text(markers[0], "VersionId")

    def behind_marker(self, name: str, limit: int | None = None,
                      span: tuple[int, int] | None = None) -> bytes | None:
        """The content of ``name``'s locked version when a delete marker hides it (a DELETE
        that Object Lock made harmless), read without changing anything in the bucket;
        None when it is not so hidden. Reading commands see such objects through this.
        ``limit``: as `S3Backend.get`'s; ``span``: only bytes [start, end) (a pack's)."""
        found = self._locked_under_marker(name, time.time())
        if found is None:
            return None
        ranged = {"range": f"bytes={span[0]}-{span[1] - 1}"} if span else None
        answer = self._send("GET", name, f"versionId={quote(found[0], safe='')}",
                            extra=ranged)
        if answer.status_code == 416:
            return b""
        if answer.status_code >= 300:
            raise self._refused(answer, f"reading the locked version of {name}")
        return self._bounded(name, answer, span[1] - span[0] if span else limit)

    def version(self, name: str, version: str, limit: int | None = None) -> bytes:
        """One version of ``name``; KeyError when it is gone. ``limit``: as `S3Backend.get`'s."""
        answer = self._send("GET", name, f"versionId={quote(version, safe='')}")
        if answer.status_code == 404:
            raise KeyError(name)
        if answer.status_code >= 300:
            raise self._refused(answer, f"reading version {version} of {name}")
        return self._bounded(name, answer, limit)

    def newest(self, name: str, limit: int | None = None) -> bytes:
        """The newest version of ``name`` that is not a delete marker, whether current or
        hidden behind one, locked or not (one listing of its versions, one GET by version
        id); KeyError when none is left. `behind_marker` reads only locked ones: this is
        for the prune, which must know what a hidden pack's index names even once the
        lock has passed (`cloud_pack_locks.read_hidden`)."""
        versions, _markers = self._versions(name)
        if not versions:
            raise KeyError(name)
        return self.version(name, _text(versions[-1], "VersionId"), limit)

    def _bounded(self, name: str, answer: httpx.Response, limit: int | None = None) -> bytes:
        limit = self.backend.max_object if limit is None else limit
        if limit is not None and len(answer.content) > limit:
            raise Corruption(f"object {name} in bucket {self.backend.bucket!r} is "
                             f"{len(answer.content)} bytes, more than any cairn object here "
                             f"({limit}): it was not written by cairn; remove it")
        return answer.content

    def unhide(self, name: str, now: float) -> bool:
        """If ``name`` is hidden behind a delete marker while its newest version is still
        locked (after ``now``), remove the marker, so the object is back; True when done.
        Only writers do this (`Cloud.revive`); readers read past the marker."""
        found = self._locked_under_marker(name, now)
        if found is None:
            return False
        gone = self._send("DELETE", name, f"versionId={quote(found[1], safe='')}")
        if gone.status_code >= 300:
            raise self._refused(gone, f"removing the delete marker of {name}")
        return True

    def _counted(self) -> None:
        with self._count:
            self.extensions += 1
