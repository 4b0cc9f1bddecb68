"""Where alerts go: a webhook URL and/or an e-mail address with its SMTP server.

Checked when set (a malformed URL, address or ``HOST:PORT`` is refused and nothing
changes); an unreachable server is only a warning, because the appliance may be set up
before the mail relay is. The SMTP password is kept in ``appliance.db`` (root only) and is
never shown back.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from cairn.errors import UsageError

_EMAIL = re.compile(r"^[^@\s,]+@[^@\s,]+$")


@dataclass(frozen=True)
class Settings:
    webhook: str | None = None
    email: str | None = None
    smtp: str | None = None
    starttls: bool = False
    smtp_user: str | None = None
    smtp_password: str | None = None
    sender: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Settings:
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public(self) -> dict[str, Any]:
        """What may be shown: everything but the password (only whether one is set)."""
        shown = {k: v for k, v in asdict(self).items() if k != "smtp_password"}
        shown["smtp_password_set"] = bool(self.smtp_password)
        return shown

    @property
    def smtp_address(self) -> tuple[str, int]:
        assert self.smtp
        return parse_host_port(self.smtp)

    def check(self) -> Settings:
        """``self`` if well formed; else a UsageError naming the bad value."""
        if self.webhook is not None:
            url = urlsplit(self.webhook)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise UsageError(f"webhook {self.webhook!r} is not an http:// or https:// URL")
        if self.email is not None:
            if not _EMAIL.match(self.email):
                raise UsageError(f"e-mail address {self.email!r} is not like ops@example.com")
            if not self.smtp:
                raise UsageError("--email needs --smtp HOST:PORT (the mail server to send by)")
        if self.smtp is not None:
            parse_host_port(self.smtp)
        if (self.smtp_user is None) != (self.smtp_password is None):
            raise UsageError("give --smtp-user and --smtp-password-file together")
        if self.webhook is None and self.email is None:
            raise UsageError("give --webhook URL and/or --email ADDRESS --smtp HOST:PORT")
        return self


def parse_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"SMTP server {text!r} is not HOST:PORT, e.g. mail.example.com:587")
    return host.strip("[]"), int(port)
