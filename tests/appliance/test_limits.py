"""Request bodies are refused at their cap before they are buffered or authenticated."""

from __future__ import annotations

import itertools
import random
import resource
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cairn.agent.client import ApplianceClient
from cairn.agent.upload import HeldFrames
from cairn.errors import ApplianceRefused
from cairn.frames import FRAME, MAX_FRAME, MIN_FRAME, encode_frame, frame_hash
from cairn.plan import encode as plan_wire
from tests.appliance.harness import Agent, Appliance, restore, wait_for
from tests.appliance.memory import filled, peak_rss, reset_peak, rss


def _connect(port: int) -> socket.socket:
    """A connection with a small send buffer: what `chunked_post` counts as sent is then
    what the appliance's side took, not also the megabytes this side's kernel would queue
    (an autotuned buffer once let 9 MiB count as sent against a cap a few MiB below)."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
    raw.settimeout(60)
    raw.connect(("127.0.0.1", port))
    return raw


def chunked_post(appliance: Appliance, path: str, total: int, token: str | None = None,
                 method: str = "POST") -> tuple[bytes, int]:
    """Send up to ``total`` bytes chunked; returns (response head, bytes sent before it)."""
    context = ssl.create_default_context(cadata=appliance.pem)
    context.check_hostname = False
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    chunk = b"{" + b" " * (1024 * 1024 - 1)
    sent = 0
    with _connect(appliance.port) as raw, context.wrap_socket(raw) as tls:
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


def open_upload(client: ApplianceClient, size: int) -> dict[str, Any]:
    """Protect volume ``sda`` of ``size`` bytes and open (or resume) its upload."""
    client.json("PUT", "/api/v1/agent/volumes/sda", json={"size": size})
    return dict(client.json("POST", "/api/v1/agent/uploads", json={"volume": "sda",
                                                                   "size": size}))


def test_a_frame_reaches_the_spool_as_it_arrives_not_held_whole(
        appliance: Appliance, make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """Two frames of the largest size the format allows (16 MiB) leave the appliance's
    peak resident memory where it was: their parts are written as they come (it held each
    frame whole and copied it, 41 MB more, before). Each frame is still hashed whole, and
    the point holds exactly what was sent."""
    assert appliance.proc is not None
    token = make_agent("wide01").token
    size = 2 * MAX_FRAME
    part = random.Random(1).randbytes(1 << 20)

    def frame(n: int) -> Iterator[bytes]:
        yield FRAME.pack(n * MAX_FRAME, MAX_FRAME)
        for k in range(MAX_FRAME >> 20):
            yield bytes([n, k]) + part[2:]

    with appliance.client(token) as c:
        upload = open_upload(c, size)["upload"]
        path = f"/api/v1/agent/uploads/{upload}/data"
        c.request("PUT", path, content=encode_frame(0, b"w" * MIN_FRAME))  # first-call imports
        before = rss(appliance.proc.pid)
        reset_peak(appliance.proc.pid)
        c.request("PUT", path, content=(p for n in range(2) for p in frame(n)),
                  headers={"Content-Length": str(size + 2 * FRAME.size)})
        grew = peak_rss(appliance.proc.pid) - before
        whole = [b"".join(list(frame(n))[1:]) for n in range(2)]
        assert sorted(open_upload(c, size)["received"]) == [
            [n * MAX_FRAME, MAX_FRAME, frame_hash(whole[n]).hex()] for n in range(2)]
        point = c.json("POST", f"/api/v1/agent/uploads/{upload}/commit",
                       json={"ranges": [[0, size]], "full": True})["point"]
    assert grew < 12 * 1024 * 1024, grew
    assert restore(appliance, point, tmp_path / "out.img") == b"".join(whole)


def test_a_cut_frame_counts_for_nothing_and_drops_what_it_overwrote(
        appliance: Appliance, make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """A body cut inside a frame leaves part of the new bytes in the spool over the old:
    the old frame's record goes before the first new byte is written, so neither a
    resumed agent nor the commit trusts that range until the frame arrives whole."""
    token = make_agent("cut01").token
    size = 4 << 20
    old, new = encode_frame(0, b"a" * size), encode_frame(0, b"b" * size)
    with appliance.client(token) as c:
        upload = open_upload(c, size)["upload"]
        path = f"/api/v1/agent/uploads/{upload}/data"
        c.request("PUT", path, content=old)
        assert open_upload(c, size)["received"] == [[0, size, frame_hash(old[12:]).hex()]]
        context = ssl.create_default_context(cadata=appliance.pem)
        context.check_hostname = False
        with socket.create_connection(("127.0.0.1", appliance.port), timeout=30) as raw, \
                context.wrap_socket(raw) as tls:
            tls.sendall(f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                        f"Content-Length: {len(new)}\r\n\r\n".encode() + new[: size // 2])
            # Written mid-frame while the body is still open: the old record went first.
            wait_for(lambda: not open_upload(c, size)["received"], timeout=30)
        with pytest.raises(ApplianceRefused) as refused_commit:
            c.json("POST", f"/api/v1/agent/uploads/{upload}/commit",
                   json={"ranges": [[0, size]], "full": True})
        assert refused_commit.value.status == 409
        c.request("PUT", path, content=new)
        point = c.json("POST", f"/api/v1/agent/uploads/{upload}/commit",
                       json={"ranges": [[0, size]], "full": True})["point"]
    assert restore(appliance, point, tmp_path / "out.img") == new[12:]


def test_a_frame_under_the_minimum_is_refused_naming_it(
        appliance: Appliance, make_agent: Callable[..., Agent]) -> None:
    """Frames under MIN_FRAME are what would let an agent (or a stolen token) grow the
    appliance's records without limit: refused in one line naming the limit, but for the
    frame ending at the volume's end, which an agent sends whatever the volume's size."""
    token = make_agent("tiny01").token
    size = 16 * MIN_FRAME + 100
    with appliance.client(token) as c:
        upload = open_upload(c, size)["upload"]
        path = f"/api/v1/agent/uploads/{upload}/data"
        with pytest.raises(ApplianceRefused) as tiny:
            c.request("PUT", path, content=encode_frame(MIN_FRAME, b"t" * 100),
                      headers={"Content-Type": "application/octet-stream"})
        assert tiny.value.status == 400
        assert f"minimum frame ({MIN_FRAME} bytes" in str(tiny.value)
        assert "\n" not in str(tiny.value)
        c.request("PUT", path, content=encode_frame(16 * MIN_FRAME, b"e" * 100),
                  headers={"Content-Type": "application/octet-stream"})
        assert open_upload(c, size)["received"] == [
            [16 * MIN_FRAME, 100, frame_hash(b"e" * 100).hex()]]


def test_the_resume_reply_is_bounded_by_the_volume_not_the_frames_sent(
        appliance: Appliance, make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """2,000 overlapping frames over a 64 KiB volume leave at most 17 records (each frame
    replaces those it overwrote): the table is bounded by the volume's size over
    MIN_FRAME, and a resume reply by a page (the agent reads the pages after the first as
    its frames pass them, and back from the first when it rewinds).
    The records left still describe the spool: frames sent after them commit and restore
    byte for byte."""
    token = make_agent("many01").token
    size = 16 * MIN_FRAME
    rnd = random.Random(7)
    with appliance.client(token) as c:
        upload = open_upload(c, size)["upload"]
        path = f"/api/v1/agent/uploads/{upload}/data"
        for _ in range(2):
            c.request("PUT", path, content=b"".join(
                encode_frame(rnd.randrange(0, size - MIN_FRAME + 1, 512),
                             rnd.randbytes(MIN_FRAME)) for _ in range(1000)),
                      headers={"Content-Type": "application/octet-stream"})
        received = open_upload(c, size)["received"]
        assert len(received) <= size // MIN_FRAME + 1
        for (o1, n1, _), (o2, _, _) in itertools.pairwise(received):
            assert o1 + n1 <= o2
        data = rnd.randbytes(size)
        c.request("PUT", path, content=b"".join(
            encode_frame(o, data[o : o + MIN_FRAME]) for o in range(0, size, MIN_FRAME)),
                  headers={"Content-Type": "application/octet-stream"})
        reply = open_upload(c, size)
        assert len(reply["received"]) == size // MIN_FRAME and reply["received_next"] is None
        page = c.json("GET", f"/api/v1/agent/uploads/{upload}/received",
                      params={"after": MIN_FRAME, "limit": 5})
        assert page["received"] == reply["received"][2:7]
        assert page["received_next"] == 6 * MIN_FRAME
        held = HeldFrames(c, upload, {"received": [], "received_next": -1},
                          time.monotonic() + 30, limit=3)
        records = [(o, n, bytes.fromhex(h)) for o, n, h in reply["received"]]
        assert [held.get(o, n) for o, n, _h in records] == [h for _o, _n, h in records]
        first, last = records[0], records[-1]
        assert held.get(first[0], first[1] - 512) is None  # rewound; not the length held
        assert held.get(first[0] + 512, MIN_FRAME) is None  # no frame starts there
        assert held.get(last[0], last[1]) == last[2]
        point = c.json("POST", f"/api/v1/agent/uploads/{upload}/commit",
                       json={"ranges": [[0, size]], "full": True})["point"]
    assert restore(appliance, point, tmp_path / "out.img") == data


def test_the_appliance_reads_at_most_max_bodies_across_machines(tmp_path: Path) -> None:
    """With ``[uploads] max_bodies = 1``, one machine's body being read leaves another
    machine a 429 with ``Retry-After``; a real agent that meets it retries and finishes its
    backup once the slot frees."""
    app = Appliance(tmp_path)
    app.config.write_text(app.config.read_text() + "[uploads]\nmax_bodies = 1\n")
    agents: list[Agent] = []
    try:
        app.start()
        agents = [Agent(app, f"many{n:02d}") for n in range(2)]
        held = hold_body(app, agents[0].token)
        try:
            wait_for(lambda: metric(app, "cairn_upload_bodies_reading") == 1, timeout=30)
            with app.client(agents[1].token) as c:
                path = f"/api/v1/agent/uploads/{open_upload(c, 1 << 20)['upload']}/data"
                answer = c.http.put(path, content=encode_frame(0, b"x" * 4096))
            assert answer.status_code == 429, answer.text
            assert answer.headers["retry-after"] == "1"
            assert "max_bodies allows (1)" in answer.json()["detail"]
            disk = tmp_path / "many01.img"
            filled(disk, 2)
            agents[1].protect("sda", disk)
            with app.admin() as admin:
                admin.json("POST", "/api/v1/machines/many01/jobs", json={})
            runner = agents[1].start()
            wait_for(lambda: metric(app, "cairn_upload_bodies_refused_total") >= 2, timeout=60)
        finally:
            held.close()
        wait_for(lambda: runner.poll() is not None or any(
            j["state"] in ("succeeded", "failed") for j in app.jobs("many01")), timeout=120)
        assert [j["state"] for j in app.jobs("many01")] == ["succeeded"]
    finally:
        for agent in agents:
            agent.stop()
        app.stop()


def hold_body(appliance: Appliance, token: str) -> ssl.SSLSocket:
    """A machine's upload body that has begun and then waits: it holds a slot."""
    with appliance.client(token) as c:
        upload = open_upload(c, 1 << 20)["upload"]
    context = ssl.create_default_context(cadata=appliance.pem)
    context.check_hostname = False
    tls = context.wrap_socket(socket.create_connection(("127.0.0.1", appliance.port),
                                                       timeout=30))
    frame = encode_frame(0, b"x" * 4096)
    tls.sendall(f"PUT /api/v1/agent/uploads/{upload}/data HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {len(frame)}\r\n\r\n"
                .encode() + frame[:2000])
    return tls


def metric(appliance: Appliance, name: str) -> float:
    """The value of an unlabelled sample ``name`` in ``/metrics``."""
    for line in appliance.metrics().splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def test_a_large_plan_is_held_16_bytes_a_range(
        appliance: Appliance, make_agent: Callable[..., Agent]) -> None:
    """A commit listing 500,000 ranges (binary, 8 MiB) leaves the appliance's peak within
    40 MB of where it was, and its answer names what is missing (as JSON, 4 million ranges
    took it from 85 MB to 1.3 GB); a JSON plan past 1 MiB is refused unread."""
    assert appliance.proc is not None
    token = make_agent("plan01").token
    ranges = [(k * 8192, 1) for k in range(500_000)]
    with appliance.client(token) as c:
        upload = open_upload(c, 1 << 40)["upload"]
        path = f"/api/v1/agent/uploads/{upload}/commit"
        with pytest.raises(ApplianceRefused) as too_big:
            c.request("POST", path, content=b'{"ranges": [' + b" " * (1 << 20) + b"]}",
                      headers={"Content-Type": "application/json"})
        assert too_big.value.status == 413
        before = rss(appliance.proc.pid)
        reset_peak(appliance.proc.pid)
        with pytest.raises(ApplianceRefused) as missing:
            c.request("POST", path, content=plan_wire(ranges), params={"full": "true"},
                      headers={"Content-Type": "application/octet-stream"})
        grew = peak_rss(appliance.proc.pid) - before
    assert missing.value.status == 409
    assert "500000 bytes of the listed ranges have not arrived" in str(missing.value)
    assert grew < 40 * 1024 * 1024, grew
