"""Repository keys: the secrets that stay on the appliance and make a bucket trustworthy.

Two kinds, one file format (a single line, mode 0600)::

    <64 hex digits>              an encryption key (`cairn init --encrypt` writes REPO/key)
    integrity <64 hex digits>    an integrity key: authenticates, encrypts nothing

Whoever can write to a bucket can rewrite anything in it, so everything cairn reads back
from a bucket that is not a content-addressed chunk (the config, every point record) carries
a MAC made with a subkey of the repository key (`records`). An encrypted repository uses its
encryption key; an unencrypted cloud repository gets an integrity key at ``cairn init``,
kept in the keys folder (``$CAIRN_KEYS`` or ``~/.config/cairn/keys``) as ``<repository
id>.key``. Neither is ever uploaded: lose the key and the bucket can no longer be trusted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import UsageError
from cairn.store.chunks import KEY_SIZE, key_id

_INTEGRITY = "integrity "
REPOSITORY_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class RepoKey:
    secret: bytes
    encrypts: bool

    @property
    def id(self) -> str:
        return key_id(self.secret)


def keys_dir() -> Path:
    return Path(os.environ.get("CAIRN_KEYS") or Path.home() / ".config" / "cairn" / "keys")


def integrity_key_path(repository_id: str) -> Path:
    """Where this node keeps the integrity key of an unencrypted cloud repository; the id
    is checked first, so a bucket's config can never steer this path anywhere else."""
    if not REPOSITORY_ID.match(repository_id):
        raise UsageError(f"repository id {repository_id!r} is not 32 hex digits: the "
                         "bucket's config.json was altered; restore it from a copy")
    return keys_dir() / f"{repository_id}.key"


def read_key_file(key_file: Path) -> RepoKey:
    try:
        text = key_file.read_text()
    except OSError:
        text = ""
    return parse_key(text, str(key_file))


def parse_key(text: str, where: str) -> RepoKey:
    """The key in ``text`` (a key file's line), or a `UsageError` naming ``where`` it came
    from."""
    text = text.strip()
    encrypts = not text.startswith(_INTEGRITY)
    try:
        secret = bytes.fromhex(text.removeprefix(_INTEGRITY))
    except ValueError:
        secret = b""
    if len(secret) != KEY_SIZE:
        raise UsageError(f"cannot read a cairn key from {where}: give the key file "
                         "`cairn init` wrote")
    return RepoKey(secret, encrypts)


def key_text(key: RepoKey) -> str:
    """The line a key file holds for ``key``."""
    return ("" if key.encrypts else _INTEGRITY) + key.secret.hex() + "\n"


def write_key_file(path: Path, encrypts: bool) -> RepoKey:
    """A new random key in a new file (never overwriting one), readable by its owner only."""
    key = RepoKey(os.urandom(KEY_SIZE), encrypts)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_text(key))
    return key
