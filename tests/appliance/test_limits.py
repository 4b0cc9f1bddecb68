"""Request bodies are refused at their cap before they are buffered or authenticated."""

from __future__ import annotations

import resource
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.agent.client import ApplianceClient
from cairn.errors import ApplianceRefused
from cairn.frames import encode_frame
from tests.appliance.harness import Agent, Appliance, wait_for
from tests.appliance.memory import filled, peak_rss, reset_peak, rss


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


def test_upload_memory_does_not_grow_with_the_volume(
        appliance: Appliance, make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """Sixteen times the data leaves the peak resident memory of the agent and of the
    appliance where it was: the agent streams its volume in bounded frames, the appliance
    spools them and ingests in bounded reads (it held 88 MB more for 64 MiB than for 4 MiB
    when the ingest read 16 MiB at a time, four reads ahead). Every agent run is a child of
    this test, so the children's peak after the larger run bounds that run; the appliance's
    peak is reset before each upload."""
    assert appliance.proc is not None
    agent_peaks, appliance_peaks = [], []
    for name, mib in (("small01", 4), ("large01", 64)):
        disk = tmp_path / f"{name}.img"
        filled(disk, mib)
        agent = make_agent(name)
        agent.protect("sda", disk)
        reset_peak(appliance.proc.pid)
        assert agent.backup()["ok"]
        appliance_peaks.append(peak_rss(appliance.proc.pid))
        agent_peaks.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    assert agent_peaks[1] - agent_peaks[0] < 8 * 1024 * 1024, agent_peaks
    assert appliance_peaks[1] - appliance_peaks[0] < 40 * 1024 * 1024, appliance_peaks


def test_one_machine_sends_at_most_two_bodies_at_once(
        appliance: Appliance, make_agent: Callable[..., Agent]) -> None:
    """Each body being read holds a frame and a batch: a token holder opening many
    connections gets 429 (which the agent retries) past two, and a slot frees when a
    connection ends."""
    token = make_agent("busy01").token
    context = ssl.create_default_context(cadata=appliance.pem)
    context.check_hostname = False
    with appliance.client(token) as c:
        c.json("PUT", "/api/v1/agent/volumes/sda", json={"size": 1 << 20})
        upload = c.json("POST", "/api/v1/agent/uploads", json={"volume": "sda",
                                                               "size": 1 << 20})["upload"]
        path = f"/api/v1/agent/uploads/{upload}/data"
        frame = encode_frame(0, b"x" * 4096)

        def hold_slot() -> ssl.SSLSocket:
            """Headers and half a frame, then nothing: a body being read, holding a slot."""
            tls = context.wrap_socket(socket.create_connection(("127.0.0.1", appliance.port),
                                                               timeout=30))
            tls.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}"
                        f"\r\nContent-Length: {len(frame)}\r\n\r\n".encode() + frame[:2000])
            return tls

        slow = [hold_slot(), hold_slot()]

        def third_is_refused() -> bool:
            # A slow body that arrived while a probe held a slot was itself refused: the
            # server answered it, so it holds nothing; open another in its place.
            for i, tls in enumerate(slow):
                if answered(tls):
                    tls.close()
                    slow[i] = hold_slot()
            return refused(c, path, frame) == 429

        try:
            wait_for(third_is_refused, timeout=30)
        finally:
            for tls in slow:
                tls.close()
        wait_for(lambda: refused(c, path, frame) is None, timeout=30)


def answered(tls: ssl.SSLSocket) -> bool:
    """Whether the server has answered on ``tls`` (without waiting for it)."""
    tls.setblocking(False)
    try:
        return bool(tls.recv(1))
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    finally:
        tls.setblocking(True)


def refused(client: ApplianceClient, path: str, body: bytes) -> int | None:
    """The status refusing ``body``, or None once it is taken."""
    try:
        client.request("PUT", path, content=body,
                       headers={"Content-Type": "application/octet-stream"})
    except ApplianceRefused as exc:
        return exc.status
    return None
