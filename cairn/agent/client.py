"""HTTPS to the appliance with its certificate pinned; used by the agent and the admin CLI.

There is no CA: the appliance's self-signed certificate is fetched once (at pairing, or by
an admin command), checked against the expected SHA-256 fingerprint, and from then on it is
the *only* trust anchor of the TLS context, so the handshake itself refuses any other
certificate before a token is sent. Every response is checked again against the fingerprint
(`_check_pin`), so a pin can never silently widen.

Errors come back typed: `ApplianceUnreachable` (retry may help), `ApplianceRefused` (the
appliance said no; its one-line reason is the message, its status is ``.status``).
"""

from __future__ import annotations

import hashlib
import ssl
from typing import Any
from urllib.parse import urlsplit

import httpx

from cairn.errors import (
    ApplianceRefused,
    ApplianceUnreachable,
    CertificateMismatch,
    UsageError,
)


def fingerprint_der(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise UsageError(f"appliance address {url!r} must look like https://HOST:PORT")
    return parts.hostname, parts.port or 443


def fetch_certificate(url: str, expected: str | None) -> tuple[str, str]:
    """``(pem, fingerprint)`` of what ``url`` presents; refuses a mismatch with ``expected``."""
    host, port = _address(url)
    try:
        pem = ssl.get_server_certificate((host, port), timeout=10)
    except OSError as exc:
        raise ApplianceUnreachable(f"cannot reach the appliance at {url} ({exc}): check the "
                                   "address and that `cairn serve` runs") from None
    fingerprint = fingerprint_der(ssl.PEM_cert_to_DER_cert(pem))
    if expected and fingerprint.lower() != expected.lower():
        raise CertificateMismatch(f"the appliance at {url} presents certificate {fingerprint}, "
                                  f"not the expected {expected}: check the address, or that "
                                  "nobody is intercepting the connection")
    return pem, fingerprint


def pinned_context(pem: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=pem)
    return context


class ApplianceClient:
    def __init__(self, url: str, token: str | None, fingerprint: str, pem: str,
                 timeout: float = 120.0) -> None:
        _address(url)
        self.url = url.rstrip("/")
        self.fingerprint = fingerprint.lower()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, verify=pinned_context(pem), headers=headers,
                                 timeout=timeout, event_hooks={"response": [self._check_pin]})

    unreachable_hint = "it retries by itself, or check that `cairn serve` runs"
    """What to do when the appliance does not answer: an agent retries; a one-shot admin
    command (`cli._appliance`) says where it looked instead."""

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApplianceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_pin(self, response: httpx.Response) -> None:
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        if der is None or fingerprint_der(der) != self.fingerprint:
            raise CertificateMismatch(f"the appliance at {self.url} no longer presents the "
                                      f"pinned certificate {self.fingerprint}: re-pair only "
                                      "if you know why it changed")

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApplianceUnreachable(f"the appliance at {self.url} did not answer "
                                       f"({type(exc).__name__}: {exc}): "
                                       f"{self.unreachable_hint}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApplianceRefused(f"the appliance refused {method} {path} "
                                   f"({response.status_code}): {detail}", response.status_code)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return None if response.status_code == 204 else response.json()
