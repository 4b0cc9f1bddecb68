"""The appliance's own tokens: listed, added, revoked and rotated (``cairn tokens``).

Three kinds, and each lives exactly as long as what gave it:

- ``file``: the token in ``<repo>/admin-token``. Only the file's current token is valid:
  rotating writes a new file and the old token stops working at once, and a start with a
  different file forgets the one before.
- ``env``: the value of ``CAIRN_ADMIN_TOKEN`` at start. Every start forgets the previous
  one, so a token given by the environment dies with the variable.
- ``added``: made by ``cairn tokens add``, until revoked. Scope ``admin`` or ``metrics``
  (``metrics`` reads ``/metrics`` and nothing else, for a Prometheus scraper).

Only hashes are stored. A token's id is the start of its hash: enough to name it, useless
to an attacker.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cairn.appliance.errors import Conflict, NotFound
from cairn.appliance.state import State, digest, new_token

SCOPES = ("admin", "metrics")


def token_id(token: str) -> str:
    return digest(token)[:12]


def _insert(state: State, token: str, kind: str, scope: str, label: str | None) -> str:
    with state.tx() as db:
        if kind in ("file", "env"):
            db.execute("DELETE FROM api_tokens WHERE kind=?", (kind,))
        db.execute("INSERT OR REPLACE INTO api_tokens VALUES(?, ?, ?, ?, ?, ?)",
                   (token_id(token), digest(token), kind, scope, label, time.time()))
    return token_id(token)


def _write_file(path: Path, token: str) -> None:
    """Atomically, mode 0600 whatever the umask; a planted ``.new`` link is replaced."""
    tmp = path.with_name(path.name + ".new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(path)


def start(repo: Path, state: State) -> None:
    """At every start: the file's token (made on first start) and the environment's, if any."""
    with state.tx() as db:
        db.execute("DELETE FROM api_tokens WHERE kind='env'")
    env = os.environ.get("CAIRN_ADMIN_TOKEN")
    if env:
        _insert(state, env, "env", "admin", "CAIRN_ADMIN_TOKEN")
    path = repo / "admin-token"
    if path.exists():
        token = path.read_text().strip()
    else:
        token = new_token("admin")
        _write_file(path, token)
    _insert(state, token, "file", "admin", str(path))


def listing(state: State) -> list[dict[str, Any]]:
    return [{"id": i, "kind": k, "scope": s, "label": lbl, "created": c} for i, k, s, lbl, c in
            state.query("SELECT id, kind, scope, label, created FROM api_tokens "
                        "ORDER BY created")]


def add(state: State, scope: str, label: str | None) -> dict[str, Any]:
    token = new_token(scope)
    return {"id": _insert(state, token, "added", scope, label), "token": token,
            "scope": scope, "label": label}


def rotate(repo: Path, state: State) -> dict[str, Any]:
    """A new ``admin-token`` file; the old file token stops working in the same step."""
    token = new_token("admin")
    _write_file(repo / "admin-token", token)
    return {"id": _insert(state, token, "file", "admin", str(repo / "admin-token")),
            "token": token}


def revoke(state: State, ident: str) -> None:
    rows = state.query("SELECT kind FROM api_tokens WHERE id=?", (ident,))
    if not rows:
        raise NotFound(f"no token {ident!r}: `cairn tokens` lists them")
    if rows[0][0] == "file":
        raise Conflict("the admin-token file's token cannot be revoked, only replaced: "
                       "`cairn tokens rotate`")
    with state.tx() as db:
        db.execute("DELETE FROM api_tokens WHERE id=?", (ident,))
