"""Creating a bucket: one signed ``PUT /BUCKET`` (AWS Signature Version 4), as restic does.

obstore reads and writes objects but cannot create buckets, and boto3 is too heavy a
dependency for one request, so the request is signed here: the canonical request, the
string to sign and the derived key follow the AWS SigV4 specification for S3 with a signed
payload hash. Outside ``us-east-1`` the body names the region (``LocationConstraint``).
An answer that the caller already owns the bucket counts as success (two nodes racing).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import httpx

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


def create_bucket(endpoint: str, bucket: str, access_key: str, secret_key: str,
                  region: str) -> None:
    url = f"{endpoint.rstrip('/')}/{bucket}"
    body = b"" if region == "us-east-1" else (
        "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">"
        f"<LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
    ).encode()
    headers = signed_headers("PUT", url, body, Credentials(access_key, secret_key, region))
    try:
        answer = httpx.put(url, content=body, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        raise S3Unreachable(endpoint, str(exc) or type(exc).__name__) from None
    if answer.status_code < 300 or "BucketAlreadyOwnedByYou" in answer.text:
        return
    if answer.status_code in (401, 403):
        raise S3AccessDenied(endpoint, bucket, f"HTTP {answer.status_code} creating the bucket")
    raise S3Error(f"{endpoint} answered HTTP {answer.status_code} to creating bucket "
                  f"{bucket!r}: {answer.text[:200]}", retryable=answer.status_code >= 500)
