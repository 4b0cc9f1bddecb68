"""Request bodies are refused at their cap before they are buffered or authenticated."""

from __future__ import annotations

import resource
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.errors import ApplianceRefused
from tests.appliance.harness import Agent, Appliance


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def chunked_post(appliance: Appliance, path: str, total: int, token: str | None = None,
                 method: str = "POST") -> tuple[bytes, int]:
    """Send up to ``total`` bytes chunked; returns (response head, bytes sent before it)."""
    context = ssl.create_default_context(cadata=appliance.pem)
    context.check_hostname = False
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    chunk = b"{" + b" " * (1024 * 1024 - 1)
    sent = 0
    with socket.create_connection(("127.0.0.1", appliance.port), timeout=60) as raw, \
            context.wrap_socket(raw) as tls:
        tls.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"{auth}Transfer-Encoding: chunked\r\n\r\n".encode())
        tls.setblocking(False)
        answer = b""
        deadline = time.monotonic() + 60
        while b"\r\n\r\n" not in answer and time.monotonic() < deadline:
            try:
                answer += tls.recv(65536)
                if not answer:
                    break
                continue
            except ssl.SSLWantReadError:
                pass
            except OSError:
                break
            if sent >= total:
                time.sleep(0.05)
                continue
            try:
                tls.setblocking(True)
                tls.settimeout(5)
                tls.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            except OSError:
                pass
            finally:
                tls.setblocking(False)
        return answer, sent


def test_chunked_pair_without_token_is_refused_early(appliance: Appliance) -> None:
    assert appliance.proc is not None
    before = rss(appliance.proc.pid)
    head, sent = chunked_post(appliance, "/api/v1/pair", 256 * 1024 * 1024)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert sent <= 16 * 1024 * 1024
    assert rss(appliance.proc.pid) - before < 32 * 1024 * 1024


def test_agent_token_cannot_pass_a_cap_with_chunked_encoding(
        appliance: Appliance, make_agent: Callable[..., Agent]) -> None:
    agent = make_agent("big")
    head, sent = chunked_post(appliance, "/api/v1/agent/volumes/sda", 64 * 1024 * 1024,
                              token=agent.token, method="PUT")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert sent <= 8 * 1024 * 1024
    with appliance.client(agent.token) as c:
        assert c.json("PUT", "/api/v1/agent/volumes/sda", json={"size": 4096})["size"] == 4096


def test_declared_length_over_the_anonymous_cap_is_refused_unread(appliance: Appliance) -> None:
    with appliance.client(None) as c, pytest.raises(ApplianceRefused) as err:
        c.request("POST", "/api/v1/machines", content=b"x" * (200 * 1024))
    assert err.value.status == 413
    assert "larger than 65536 bytes" in str(err.value)


def filled(path: Path, mib: int) -> None:
    """``mib`` MiB of data the agent must read and send whole (no holes), cheap to make."""
    block = bytes(range(256)) * 256
    with path.open("wb") as out:
        for n in range(mib * 16):
            out.write(n.to_bytes(8, "big") + block[8:])


def test_streamed_upload_memory_does_not_grow_with_the_agents_image(
        appliance: Appliance, make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """An agent streams its volume in bounded frames: five times the data leaves its peak
    resident memory where it was (every agent run is a child of this test, so the
    children's peak after the larger run bounds that run)."""
    peaks = []
    for name, mib in (("small01", 4), ("large01", 20)):
        disk = tmp_path / f"{name}.img"
        filled(disk, mib)
        agent = make_agent(name)
        agent.protect("sda", disk)
        assert agent.backup()["ok"]
        peaks.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    assert peaks[1] - peaks[0] < 8 * 1024 * 1024, peaks
