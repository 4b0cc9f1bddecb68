"""`machines add` prints an address agents on other machines can reach (issue 15)."""

from __future__ import annotations

from urllib.parse import urlsplit

from cairn.cli._appliance import pairing_url


def test_a_loopback_appliance_address_becomes_this_hosts_address() -> None:
    for url in ("https://127.0.0.1:8443", "https://[::1]:9443", "https://localhost:8443"):
        pairing = urlsplit(pairing_url(url))
        assert pairing.hostname not in ("127.0.0.1", "::1", "localhost"), pairing
        assert pairing.port == urlsplit(url).port and pairing.scheme == "https"
    assert pairing_url("https://backup.example:8443") == "https://backup.example:8443"
    assert pairing_url("https://10.1.2.3:8443") == "https://10.1.2.3:8443"
