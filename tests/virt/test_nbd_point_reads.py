"""A point served over NBD: reads the export holds are answered from its decoded blocks
(on the connection's thread, sent as views, several to a send when requests queue up), the
rest fetched on its pool; both are the image's bytes, with simple and structured replies."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from nbd_client import NbdClient

from cairn.store.reader import BlockCache, PointReader
from cairn.store.repository import Repository
from cairn.virt import nbd_protocol as p
from cairn.virt.devices import PointDevice
from cairn.virt.nbd import NbdServer
from tests.store.helpers import BLOCK, backup, count_fetches, make_image

SIZE = 48 * BLOCK + 777  # holes, data and a short last block


@pytest.mark.parametrize("structured", [True, False])
def test_reads_held_and_fetched_are_the_images_bytes(
    serve: Callable[..., NbdServer], tmp_path: Path, structured: bool
) -> None:
    data = make_image(tmp_path / "img", SIZE, seed=44, fill=0.6)
    rnd = random.Random(44)
    ranges = [(0, SIZE), *((rnd.randrange(SIZE), rnd.choice((1, 4096, 3 * BLOCK + 5)))
                           for _ in range(40))]
    ranges = [(offset, min(length, SIZE - offset)) for offset, length in ranges]
    with Repository.init(tmp_path / "repo") as repo:
        point = backup(repo, "vol", tmp_path / "img")
        cache = BlockCache(repo.chunks, 2 * SIZE)
        device = PointDevice(PointReader(repo, point, cache))
        server = serve(device, serialize=False)
        with NbdClient(server.port, structured=structured) as client:
            first = [client.read(offset, length) for offset, length in ranges]
            fetched = count_fetches(repo)
            again = [client.read(offset, length) for offset, length in ranges]
            piped = pipelined(client, ranges)
        server.close()
        device.close()
        cache.close()
    want = [bytes(data[offset : offset + length]) for offset, length in ranges]
    assert first == want and again == want and piped == want
    assert fetched == []  # the second pass was all held


def test_nbdcopy_over_four_connections_and_the_map_match_the_image(
    serve: Callable[..., NbdServer], tmp_path: Path
) -> None:
    """nbdcopy (multi-conn: 4 connections) copies a point twice, the second time from the
    blocks held; `nbdinfo --map` reports the point's holes where the image has zeros."""
    data = make_image(tmp_path / "img", SIZE, seed=46, fill=0.5)
    with Repository.init(tmp_path / "repo") as repo:
        point = backup(repo, "vol", tmp_path / "img")
        cache = BlockCache(repo.chunks, 2 * SIZE)
        device = PointDevice(PointReader(repo, point, cache))
        server = serve(device, serialize=False)
        url = f"nbd://127.0.0.1:{server.port}/"
        first = nbdcopy(url, tmp_path / "first")
        mapped = json.loads(subprocess.run(["nbdinfo", "--map", "--json", url], check=True,
                                           capture_output=True, text=True, timeout=60).stdout)
        fetched = count_fetches(repo)
        again = nbdcopy(url, tmp_path / "again")
        server.close()
        device.close()
        cache.close()
    assert first == bytes(data) and again == bytes(data)
    assert fetched == []  # the second copy was all held
    holes = [(e["offset"], e["length"]) for e in mapped if e["type"] & 1]
    zero_blocks = [(o, min(BLOCK, SIZE - o)) for o in range(0, SIZE, BLOCK)
                   if not any(data[o : o + BLOCK])]
    assert holes and merged(zero_blocks) == holes


def nbdcopy(url: str, out: Path) -> bytes:
    subprocess.run(["nbdcopy", "--connections=4", url, str(out)], check=True, timeout=60)
    return out.read_bytes()


def merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for offset, length in ranges:
        if out and sum(out[-1]) == offset:
            out[-1] = (out[-1][0], out[-1][1] + length)
        else:
            out.append((offset, length))
    return out


def pipelined(client: NbdClient, ranges: list[tuple[int, int]]) -> list[bytes]:
    """Send every read at once, as nbdcopy does, then take the replies (held reads are
    answered in order, several to a send)."""
    first = client.cookie + 1
    client.sock.sendall(b"".join(
        p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_READ, cookie, offset, length)
        for cookie, (offset, length) in enumerate(ranges, first)))
    client.cookie += len(ranges)
    return [client.reply(cookie, length) for cookie, (_, length) in enumerate(ranges, first)]


def test_send_all_sends_many_views_through_short_writes() -> None:
    """More views than one sendmsg takes, into a socket that accepts a little at a time."""
    rnd = random.Random(45)
    parts = [memoryview(rnd.randbytes(rnd.randrange(0, 3000))) for _ in range(3 * p.IOV_BATCH)]
    want = b"".join(parts)
    left, right = socket.socketpair()
    left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    left.settimeout(10)  # a timeout makes sendmsg return after a partial write
    got = bytearray()

    def drain() -> None:
        while len(got) < len(want) and (chunk := right.recv(7000)):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        p.send_all(left, *parts)
    finally:
        reader.join(timeout=10)
        left.close()
        right.close()
    assert bytes(got) == want
