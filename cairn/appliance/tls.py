"""The appliance's TLS identity: a self-signed certificate made once, at first start.

There is no public CA between an appliance and its agents; agents *pin* this certificate
instead (its SHA-256 fingerprint, taken at pairing), so the certificate must never change
behind their backs: it is created once under ``<repo>/tls/`` and reused on every start.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 3650


def fingerprint_der(der: bytes) -> str:
    """The form users compare and agents store: ``sha256:`` and 64 hex digits."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def fingerprint_pem(pem: str) -> str:
    return fingerprint_der(ssl.PEM_cert_to_DER_cert(pem))


def ensure_certificate(directory: Path) -> tuple[Path, Path, str]:
    """``(cert, key, fingerprint)``, creating the pair on first use (key readable by root)."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    if not cert_path.exists() or not key_path.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cairn appliance"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, socket.gethostname())])
        now = datetime.datetime.now(datetime.UTC)
        san = x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.DNSName(socket.gethostname()),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))])
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                .add_extension(san, critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        tmp_key = key_path.with_suffix(".tmp")
        fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        tmp_key.rename(key_path)
        tmp_cert = cert_path.with_suffix(".tmp")
        tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        tmp_cert.rename(cert_path)
    return cert_path, key_path, fingerprint_pem(cert_path.read_text())
