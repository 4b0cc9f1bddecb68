"""Sealed records: JSON objects a bucket holds and cairn trusts only once their MAC checks.

A sealed record is the JSON object itself plus one field, ``"mac"``: keyed BLAKE3 (subkey
``records`` of the repository key) over the object's canonical form (sorted keys, no spaces,
without ``"mac"``). Changing any field, adding or dropping one, breaks it; only a holder of
the key can make a new one. Callers bind a record to its place by putting the repository id
and the record's own name inside it, so a sealed record cannot be replayed elsewhere.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

import blake3

from cairn.errors import Corruption
from cairn.store.chunks import derive


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in record.items() if k != "mac"}, sort_keys=True,
                      separators=(",", ":")).encode()


class Sealer:
    """Seals and opens records with one repository's key."""

    def __init__(self, secret: bytes) -> None:
        self._key = derive(secret, "records")

    def mac(self, record: dict[str, Any]) -> str:
        return blake3.blake3(_canonical(record), key=self._key).hexdigest()

    def seal(self, record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "mac": self.mac(record)}

    def open(self, raw: bytes, what: str) -> dict[str, Any]:
        """The record in ``raw`` once its MAC checks; `Corruption` naming ``what`` if not."""
        try:  # RecursionError: a megabyte of "[" nests deeper than the parser may go
            record = json.loads(raw)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            raise Corruption(f"{what} is not a cairn record: it was altered; restore it "
                             "from a copy or remove it")
        mac = record.get("mac")
        if not isinstance(mac, str) or not mac.isascii() \
                or not hmac.compare_digest(mac, self.mac(record)):  # non-ASCII: TypeError
            raise Corruption(f"{what} fails authentication: it was altered or not written "
                             "with this repository's key; refusing to use it (restore it "
                             "from a copy, or remove it)")
        return record
