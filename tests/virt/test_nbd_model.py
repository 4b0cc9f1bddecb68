"""Random reads, writes, trims and write-zeroes through real NBD connections, checked against
a bytearray: whatever the sequence, every read and every block-status hole matches the model.

Two connections share the export (one with structured replies, one with simple replies), so
the test also checks that what one connection writes the other reads.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from nbd_client import NbdClient, NbdError
from nbd_devices import MemoryDevice

from cairn.virt import nbd_protocol as p
from cairn.virt.nbd import NbdServer

SIZE = 32 * 1024 + 512  # not a multiple of the device block, so the tail block is partial

offsets = st.integers(0, SIZE + 64)
lengths = st.one_of(st.integers(0, 16), st.integers(0, 12 * 1024))
connections = st.sampled_from([0, 1])


class NbdModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = bytearray(SIZE)
        self.server = NbdServer(MemoryDevice(SIZE))
        self.server.start()
        self.clients = [
            NbdClient(self.server.port, structured=True),
            NbdClient(self.server.port, structured=False),
        ]

    def teardown(self) -> None:
        for client in self.clients:
            client.close()
        self.server.close()

    def expect(self, fits: bool, error: int, call: Callable[[], object]) -> bool:
        """Run ``call``; it must succeed when the range fits and fail with ``error`` if not."""
        try:
            call()
        except NbdError as exc:
            assert not fits and exc.error == error, exc
            return False
        assert fits, "an out-of-range request succeeded"
        return True

    @rule(conn=connections, offset=offsets, length=lengths, seed=st.integers(0, 255))
    def write(self, conn: int, offset: int, length: int, seed: int) -> None:
        data = random.Random(seed).randbytes(length)
        fits = offset + length <= SIZE
        if self.expect(fits, p.NBD_ENOSPC, lambda: self.clients[conn].write(offset, data)):
            self.model[offset : offset + length] = data

    @rule(conn=connections, offset=offsets, length=lengths)
    def trim(self, conn: int, offset: int, length: int) -> None:
        fits = offset + length <= SIZE
        if self.expect(fits, p.NBD_EINVAL, lambda: self.clients[conn].trim(offset, length)):
            self.model[offset : offset + length] = bytes(length)

    @rule(conn=connections, offset=offsets, length=lengths, no_hole=st.booleans())
    def write_zeroes(self, conn: int, offset: int, length: int, no_hole: bool) -> None:
        fits = offset + length <= SIZE
        client = self.clients[conn]
        if self.expect(fits, p.NBD_ENOSPC, lambda: client.write_zeroes(offset, length, no_hole)):
            self.model[offset : offset + length] = bytes(length)

    @rule(conn=connections, offset=offsets, length=lengths)
    def read(self, conn: int, offset: int, length: int) -> None:
        fits = offset + length <= SIZE
        got: list[bytes] = []
        client = self.clients[conn]
        if self.expect(fits, p.NBD_EINVAL, lambda: got.append(client.read(offset, length))):
            assert got[0] == bytes(self.model[offset : offset + length])

    @rule(conn=connections)
    def flush(self, conn: int) -> None:
        self.clients[conn].flush()

    @rule(offset=st.integers(0, SIZE - 1), length=st.integers(1, SIZE), req_one=st.booleans())
    def block_status(self, offset: int, length: int, req_one: bool) -> None:
        length = min(length, SIZE - offset)
        flags = p.CMD_FLAG_REQ_ONE if req_one else 0
        pos = offset
        for run, state in self.clients[0].block_status(offset, length, flags):
            assert run > 0 and state in (0, p.STATE_HOLE | p.STATE_ZERO)
            if state:
                assert self.model[pos : pos + run] == bytes(run), f"hole at {pos} holds data"
            pos += run
        assert offset < pos <= offset + length

    @invariant()
    def whole_export_matches(self) -> None:
        assert self.clients[1].read(0, SIZE) == bytes(self.model)


TestNbdModel = NbdModel.TestCase
TestNbdModel.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
