"""Console users and their sessions, kept in the appliance's ``appliance.db``.

Passwords are hashed with Argon2id (``argon2-cffi``); a login for a name that does not exist
still runs one Argon2 verification against a fixed hash, so neither the message nor the time
tells whether the user exists. A user may also have a TOTP secret (``pyotp``): then a login
needs the current six-digit code as well. A secret is turned on only with a code made from
it (so an authenticator that never scanned it cannot lock its user out).

A session is a random 256-bit token in a cookie; only its SHA-256 digest is stored (as the
API's tokens are), with the user, a CSRF token and an expiry. Removing a user or changing
their password ends their sessions.

`cairn users` (on the appliance host) and the console's settings page both call this module:
there is one implementation of user management.
"""

from __future__ import annotations

import functools
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cairn.appliance.state import State, digest
from cairn.errors import UsageError

Role = Literal["admin", "viewer"]
ROLES: tuple[Role, ...] = ("admin", "viewer")
SESSION_SECONDS = 8 * 3600
MIN_PASSWORD = 8
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$")
TOTP_SECRET = re.compile(r"^[A-Z2-7]{16,64}$")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS console_users(name TEXT PRIMARY KEY, role TEXT NOT NULL, "
    "hash TEXT NOT NULL, totp TEXT, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS console_sessions(hash TEXT PRIMARY KEY, "
    "user TEXT NOT NULL REFERENCES console_users(name) ON DELETE CASCADE, csrf TEXT NOT NULL, "
    "created REAL NOT NULL, expires REAL NOT NULL)",
)

_HASHER = PasswordHasher()


@functools.cache
def _decoy() -> str:
    """Verified against when the user does not exist: an unknown name costs what a known one
    does."""
    return _HASHER.hash(secrets.token_hex(16))


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    totp: bool
    created: float

    @property
    def admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    expires: float


class Users:
    """User and session records; safe across threads (through `State`'s lock)."""

    def __init__(self, state: State) -> None:
        self.state = state
        with state.tx() as db:
            for statement in SCHEMA:
                db.execute(statement)

    # -- users -------------------------------------------------------------------------

    def all_users(self) -> list[User]:
        return [User(n, r, bool(t), c) for n, r, t, c in self.state.query(
            "SELECT name, role, totp, created FROM console_users ORDER BY name")]

    def get(self, name: str) -> User | None:
        return next((u for u in self.all_users() if u.name == name), None)

    def add(self, name: str, role: str, password: str, totp: bool = False) -> str | None:
        """Create ``name``; returns the TOTP secret to enrol in an authenticator, if asked."""
        _check_name(name)
        if role not in ROLES:
            raise UsageError(f"role {role!r} unknown: use admin or viewer")
        secret = new_totp_secret() if totp else None
        hashed = _hash(password)
        with self.state.tx() as db:
            if db.execute("SELECT 1 FROM console_users WHERE name=?", (name,)).fetchone():
                raise UsageError(f"user {name!r} already exists: `cairn users passwd {name}` "
                                 "changes the password, `cairn users rm` removes the user")
            db.execute("INSERT INTO console_users VALUES(?, ?, ?, ?, ?)",
                       (name, role, hashed, secret, time.time()))
        return secret

    def remove(self, name: str) -> None:
        with self.state.tx() as db:
            db.execute("DELETE FROM console_sessions WHERE user=?", (name,))
            if db.execute("DELETE FROM console_users WHERE name=?", (name,)).rowcount == 0:
                raise UsageError(f"no user {name!r}: `cairn users` lists them")

    def set_password(self, name: str, password: str) -> None:
        """Change the password and end every session of the user."""
        hashed = _hash(password)
        with self.state.tx() as db:
            if db.execute("UPDATE console_users SET hash=? WHERE name=?",
                          (hashed, name)).rowcount == 0:
                raise UsageError(f"no user {name!r}: `cairn users` lists them")
            db.execute("DELETE FROM console_sessions WHERE user=?", (name,))

    def enrol_totp(self, name: str, secret: str, code: str) -> None:
        """Turn on a one-time code for ``name`` with ``secret``, once ``code`` shows the
        authenticator holds it (a wrong code, or a made-up secret, changes nothing)."""
        if not TOTP_SECRET.match(secret):
            raise UsageError("that one-time code secret is malformed: start the set-up again")
        if not _totp_ok(secret, code):
            raise UsageError("that code does not match: enter the code the authenticator "
                             "shows now (and check its clock)")
        self._set_totp(name, secret)

    def drop_totp(self, name: str, code: str | None = None) -> None:
        """Turn ``name``'s one-time code off. The user turning off their own gives the
        current ``code`` (a borrowed session cannot); an admin resetting a lost
        authenticator gives none."""
        if code is not None:
            rows = self.state.query("SELECT totp FROM console_users WHERE name=?", (name,))
            if not rows or rows[0][0] is None or not _totp_ok(rows[0][0], code):
                raise UsageError("that code does not match: enter the code the authenticator "
                                 "shows now")
        self._set_totp(name, None)

    def _set_totp(self, name: str, secret: str | None) -> None:
        with self.state.tx() as db:
            if db.execute("UPDATE console_users SET totp=? WHERE name=?",
                          (secret, name)).rowcount == 0:
                raise UsageError(f"no user {name!r}: `cairn users` lists them")

    def authenticate(self, name: str, password: str, code: str = "") -> User | None:
        """The user when name, password (and the TOTP code, if enrolled) are right, else None.

        The same work is done whether or not the user exists.
        """
        rows = self.state.query("SELECT hash, totp FROM console_users WHERE name=?", (name,))
        stored, secret = rows[0] if rows else (_decoy(), None)
        try:
            _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if not rows:
            return None
        if secret is not None and not _totp_ok(secret, code):
            return None
        return self.get(name)

    # -- sessions ----------------------------------------------------------------------

    def open_session(self, user: User, seconds: float = SESSION_SECONDS) -> tuple[str, Session]:
        """A new session for ``user``: the cookie token (shown once) and the session."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        session = Session(user, secrets.token_urlsafe(24), now + seconds)
        with self.state.tx() as db:
            db.execute("DELETE FROM console_sessions WHERE expires<?", (now,))
            db.execute("INSERT INTO console_sessions VALUES(?, ?, ?, ?, ?)",
                       (digest(token), user.name, session.csrf, now, session.expires))
        return token, session

    def session(self, token: str) -> Session | None:
        """The live session behind a cookie token; None when unknown or expired."""
        rows = self.state.query(
            "SELECT u.name, u.role, u.totp, u.created, s.csrf, s.expires FROM console_sessions s "
            "JOIN console_users u ON u.name = s.user WHERE s.hash=?", (digest(token),))
        if not rows:
            return None
        name, role, totp, created, csrf, expires = rows[0]
        if expires <= time.time():
            return None
        return Session(User(name, role, bool(totp), created), csrf, expires)

    def close_session(self, token: str) -> None:
        with self.state.tx() as db:
            db.execute("DELETE FROM console_sessions WHERE hash=?", (digest(token),))


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise UsageError(f"invalid user name {name!r}: use letters, digits, '.', '@', '_' and "
                         "'-' (up to 63, starting with a letter or digit)")


def _hash(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def new_totp_secret() -> str:
    import pyotp

    return pyotp.random_base32()


def _totp_ok(secret: str, code: str) -> bool:
    import pyotp

    return bool(code) and pyotp.TOTP(secret).verify(code.strip(), valid_window=1)


def totp_uri(name: str, secret: str) -> str:
    """The ``otpauth://`` address an authenticator app enrols from."""
    import pyotp

    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name="cairn")
