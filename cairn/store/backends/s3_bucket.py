"""Requests about a bucket itself, which obstore (objects only) cannot make: creating it
(one signed ``PUT /BUCKET``, as restic does) and asking whether it keeps versions.

boto3 is too heavy a dependency for them, so they are signed here: the canonical request,
the string to sign and the derived key follow the AWS SigV4 specification for S3 with a
signed payload hash. Outside ``us-east-1`` the body of a creation names the region
(``LocationConstraint``). An answer that the caller already owns the bucket counts as
success (two nodes racing).

They go through the standard library's HTTP client, not httpx: every replication asks
whether its bucket keeps versions, and loading httpx and its TLS context took 0.3-0.5 s of
CPU per command (0.5 s at load 6), more than the request itself. Only a versioned bucket
goes on to `s3_lock.Retention`, which needs httpx for its many requests.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from cairn.errors import S3AccessDenied, S3Error, S3Unreachable


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    region: str


def signed_headers(method: str, url: str, body: bytes, credentials: Credentials,
                   now: float | None = None,
                   extra: dict[str, str] | None = None) -> dict[str, str]:
    """The headers that authenticate ``method url`` with ``body`` (SigV4, service s3);
    ``extra`` headers (lower-case names, such as ``x-amz-object-lock-mode``) are signed too."""
    access_key, secret_key, region = (credentials.access_key, credentials.secret_key,
                                      credentials.region)
    stamp = time.gmtime(time.time() if now is None else now)
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", stamp)
    day = amz_date[:8]
    parts = urlsplit(url)
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": parts.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date,
               **(extra or {})}
    names = ";".join(sorted(headers))
    canonical = "\n".join([method, quote(parts.path or "/"), parts.query,
                           "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), names,
                           payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret_key}".encode(), day), region), "s3"),
                "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {**headers, "authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                        f"SignedHeaders={names}, Signature={signature}"}


def _send(method: str, url: str, body: bytes, credentials: Credentials,
          timeout: float) -> tuple[int, str]:
    """One signed request; its HTTP status and text (an error status is an answer too).
    The HTTP client loads here, not with the module: every cloud command imports this one
    (`S3Backend` keeps its `Credentials`), few send a request through it."""
    import urllib.error
    import urllib.request

    headers = signed_headers(method, url, body, credentials)
    request = urllib.request.Request(url, data=body if method == "PUT" else None,
                                     headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError) as exc:  # URLError, refused, timed out, a bad URL
        parts = urlsplit(url)
        raise S3Unreachable(f"{parts.scheme}://{parts.netloc}",
                            str(getattr(exc, "reason", exc)) or type(exc).__name__) from None


def create_bucket(endpoint: str, bucket: str, credentials: Credentials) -> None:
    url = f"{endpoint.rstrip('/')}/{bucket}"
    body = b"" if credentials.region == "us-east-1" else (
        "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        f"<LocationConstraint>{credentials.region}</LocationConstraint></CreateBucketConfiguration>"
    ).encode()
    status, text = _send("PUT", url, body, credentials, 30.0)
    if status < 300 or "BucketAlreadyOwnedByYou" in text:
        return
    if status in (401, 403):
        raise S3AccessDenied(endpoint, bucket, f"HTTP {status} creating the bucket")
    raise S3Error(f"{endpoint} answered HTTP {status} to creating bucket "
                  f"{bucket!r}: {text[:200]}", retryable=status >= 500)


def versioning_enabled(endpoint: str, bucket: str, credentials: Credentials) -> bool:
    """Whether the bucket keeps versions (every Object Lock bucket does); a server that
    refuses the question or lacks the versioning API keeps none."""
    status, text = _send("GET", f"{endpoint.rstrip('/')}/{bucket}?versioning=", b"",
                         credentials, 60.0)
    if status >= 300:
        return False
    from xml.etree import ElementTree

    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return False
    return any(e.tag.rpartition("}")[2] == "Status" and e.text == "Enabled" for e in root)
