"""Real receivers for alerts: an HTTP listener for webhooks and an SMTP server (aiosmtpd).

Both bind loopback ports; the SMTP server can require STARTTLS and a login, with a
certificate made by the appliance's own TLS code (it names 127.0.0.1).
"""

from __future__ import annotations

import email
import json
import ssl
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from cairn.appliance.tls import ensure_certificate
from tests.appliance.harness import free_port


class WebhookListener:
    """Collects the JSON documents POSTed to it; answers ``status``."""

    def __init__(self, port: int = 0, status: int = 204) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = status
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                listener.received.append(json.loads(body))
                self.send_response(listener.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["kind"] == kind]


class MailServer:
    """A real SMTP server; with ``tls_dir`` it requires STARTTLS and the login ``user``."""

    def __init__(self, tls_dir: Path | None = None, user: str = "cairn",
                 password: str = "s3cret") -> None:
        self.messages: list[Message] = []
        self.logins: list[str] = []
        self.port = free_port()
        self.cert: Path | None = None
        params: dict[str, Any] = {}
        if tls_dir is not None:
            self.cert, key, _ = ensure_certificate(tls_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.cert, key)
            params = {"tls_context": context, "require_starttls": True,
                      "authenticator": self._authenticate(user, password),
                      "auth_require_tls": True}
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **params)

    def _authenticate(self, user: str, password: str) -> Any:
        def check(_server: Any, _session: Session, _env: Envelope, _mechanism: str,
                  data: Any) -> AuthResult:
            ok = (isinstance(data, LoginPassword) and data.login.decode() == user
                  and data.password.decode() == password)
            if ok:
                self.logins.append(user)
            return AuthResult(success=ok)
        return check

    async def handle_DATA(self, _server: Any, _session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def __enter__(self) -> MailServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def subjects(self) -> list[str]:
        return [str(m["Subject"]) for m in self.messages]
