"""A point served over NBD: reads the export holds are answered from its decoded blocks
(on the connection's thread, sent as views, several to a send when requests queue up), the
rest fetched on its pool; both are the image's bytes, with simple and structured replies."""

from __future__ import annotations

import json
import random
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from nbd_client import NbdClient, recv_exact

from cairn.store.reader import BlockCache, PointReader
from cairn.store.repository import Repository
from cairn.virt import nbd_protocol as p
from cairn.virt.devices import PointDevice
from cairn.virt.nbd import NbdServer
from tests.store.helpers import BLOCK, backup, count_fetches, flip_bit, make_image

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


def any_order(client: NbdClient, count: int) -> dict[int, bytes | int]:
    """``count`` structured replies in whatever order they come: by cookie, the data read
    or the error."""
    out: dict[int, bytes | int] = {}
    while len(out) < count:
        magic, flags, kind, cookie, length = p.CHUNK_HEADER.unpack(
            recv_exact(client.sock, p.CHUNK_HEADER.size))
        assert magic == p.STRUCTURED_REPLY_MAGIC and flags & p.REPLY_FLAG_DONE
        payload = recv_exact(client.sock, length)
        out[cookie] = struct.unpack(">I", payload[:4])[0] if kind == p.REPLY_TYPE_ERROR \
            else payload[8:]
    return out


def test_cold_streams_wait_for_their_read_ahead_and_a_flipped_block_is_refused(
    serve: Callable[..., NbdServer], tmp_path: Path
) -> None:
    """Three connections each send a stream of 256 KiB reads at once to a cold export, as
    nbdcopy does: a read waits on its connection's thread for blocks being read ahead, or
    goes to the pool, and replies come in any order. Each reply, by its cookie, is the
    image's bytes; the one read covering a flipped block gets EIO (that block is never
    served), and the reads beside it, whose blocks shared its failed read-ahead, are right."""
    size, step, bad = 96 * BLOCK, 4 * BLOCK, 70
    data = make_image(tmp_path / "img", size, seed=47, fill=0.8)
    data[bad * BLOCK : bad * BLOCK + 8] = b"not zero"  # the flipped block holds data
    (tmp_path / "img").write_bytes(data)
    with Repository.init(tmp_path / "repo") as repo:
        point = backup(repo, "vol", tmp_path / "img")
        cache = BlockCache(repo.chunks, 2 * size)
        reader = PointReader(repo, point, cache)
        flip_bit(repo, dict(reader.block_hashes())[bad])
        device = PointDevice(reader)
        server = serve(device, serialize=False)
        streams = [[(base + offset, step) for offset in range(0, size // 3, step)]
                   for base in range(0, size, size // 3)]
        clients = [NbdClient(server.port) for _ in streams]
        for client, ranges in zip(clients, streams, strict=True):
            client.sock.sendall(b"".join(
                p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_READ, cookie, offset, length)
                for cookie, (offset, length) in enumerate(ranges, 1)))
        got = [any_order(client, len(ranges)) for client, ranges in zip(clients, streams,
                                                                         strict=True)]
        for client in clients:
            client.close()
        server.close()
        device.close()
        cache.close()
    for replies, ranges in zip(got, streams, strict=True):
        for cookie, (offset, length) in enumerate(ranges, 1):
            want = p.NBD_EIO if offset <= bad * BLOCK < offset + length \
                else bytes(data[offset : offset + length])
            assert replies[cookie] == want, (offset, length)


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
