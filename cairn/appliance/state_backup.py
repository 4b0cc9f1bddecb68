"""The appliance's own state in its bucket, so a new appliance can be built from the bucket.

After each offsite replication the appliance writes one object, ``appliance/state``, beside
the repository in the bucket: its machines, schedules, policies, alert settings and token
hashes (a consistent copy of ``appliance.db``), its TLS key and certificate (agents pin the
certificate), its ``admin-token`` file (scripts and people keep using the token they have),
its declared isolated LANs (``lans.json``: recovered VMs join them as before),
and the local repository's block size. The object is AES-256-GCM encrypted
with a key derived from the cloud repository's key: the encryption key when the repository
is encrypted, else its integrity key. Either is kept apart from the appliance (`cairn init`
says so), and without it the object is noise; with it, `recovery` opens the bucket.

Format: ``CAIRNST1`` (8 bytes), a 12-byte nonce, then the sealed JSON
``{"version": 1, "created", "block_size", "encrypted", "files": {name: base64}}``.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cairn import scratch
from cairn.errors import UsageError
from cairn.ops.offsite import local_key
from cairn.store.chunks import derive
from cairn.store.keys import integrity_key_path, read_key_file
from cairn.store.repository import Repository

OBJECT = "appliance/state"
MAGIC = b"CAIRNST1"
LIMIT = 256 << 20
FILES = ("tls/cert.pem", "tls/key.pem", "admin-token", "lans.json")
COPY_PREFIX = "cairn-state-"
"""a copy of appliance.db being taken, in the repository's folder (`scratch`)"""


def _cipher(secret: bytes) -> AESGCM:
    return AESGCM(derive(secret, "appliance-state"))


def _database(repo: Path) -> bytes:
    """A consistent copy of appliance.db, taken by SQLite's online backup."""
    with scratch.folder(COPY_PREFIX, repo) as tmp:
        copy = tmp / "appliance.db"
        source = sqlite3.connect(repo / "appliance.db")
        target = sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            target.close()
            source.close()
        return copy.read_bytes()


def bundle(repo: Path, block_size: int, encrypted: bool) -> dict[str, Any]:
    files = {"appliance.db": _database(repo)}
    files |= {name: (repo / name).read_bytes() for name in FILES if (repo / name).exists()}
    return {"version": 1, "created": time.time(), "block_size": block_size,
            "encrypted": encrypted,
            "files": {n: base64.b64encode(data).decode() for n, data in files.items()}}


def seal(state: dict[str, Any], secret: bytes) -> bytes:
    nonce = os.urandom(12)
    return MAGIC + nonce + _cipher(secret).encrypt(nonce, json.dumps(state).encode(), MAGIC)


def unseal(blob: bytes, secret: bytes, where: str) -> dict[str, Any]:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 28:
        raise UsageError(f"{where}: the appliance state object is not one cairn wrote")
    nonce, body = blob[len(MAGIC):len(MAGIC) + 12], blob[len(MAGIC) + 12:]
    try:
        state: dict[str, Any] = json.loads(_cipher(secret).decrypt(nonce, body, MAGIC))
    except InvalidTag:
        raise UsageError(f"{where}: the key given does not open the appliance state: give "
                         "the key file of this repository (--key-file)") from None
    return state


def cloud_key(repo: Path, cloud_id: str) -> Path:
    """The key file that opens the cloud: the local repository's, else its integrity key."""
    return local_key(repo) or integrity_key_path(cloud_id)


def push(repo: Path, url: str, endpoint: str | None) -> int:
    """Write the appliance's state to the bucket at ``url``; returns its size."""
    from cairn.store.cloud import open_cloud

    with open_cloud(url, endpoint, local_key(repo)) as cloud:
        key = read_key_file(cloud_key(repo, cloud.config.id))
        with Repository.open(repo) as local:
            state = bundle(repo, local.block_size, local.config.key_id is not None)
        blob = seal(state, key.secret)
        assert cloud.remote is not None
        cloud.remote.backend.put(OBJECT, blob)  # type: ignore[attr-defined]
    return len(blob)


def fetch(url: str, endpoint: str | None) -> bytes:
    """The sealed state object of ``url``; a clear error when the bucket holds none."""
    from cairn.store.backends.s3 import open_s3_url

    backend = open_s3_url(url, endpoint)
    backend.max_object = LIMIT
    try:
        return backend.get(OBJECT)
    except KeyError:
        raise UsageError(f"{url} holds no appliance state: it is written with each offsite "
                         "replication of an appliance (`cairn offsite set`); give the "
                         "bucket an appliance replicated to") from None
