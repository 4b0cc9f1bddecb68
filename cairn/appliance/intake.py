"""One upload body onto the spool as it arrives, frame data never held whole.

`FrameReader` hands over each part of a frame as it comes off the wire; `Intake` keeps
at most WINDOW bytes of them before writing them where they belong in the spool, and
hashes each frame as its parts go by. A frame counts as received (`State.add_received`,
what a resumed agent and the commit trust) only once all of it is written and synced.

A frame being written may replace bytes of a frame received before with other content (a
resumed upload, a new snapshot). Its old record is dropped before the first of its bytes
reaches the spool: if the body is cut, the spool holds a mix of old and new there, and no
record claims that range, so the agent sends it again and the commit waits for it.
"""

from __future__ import annotations

import blake3

from cairn.appliance import metrics
from cairn.appliance.spool import Spool
from cairn.appliance.state import Machine, State, Upload
from cairn.frames import FRAME, Piece

WINDOW = 1024 * 1024
"""Frame bytes held before they are written: one agent frame (it cuts at 1 MiB marks)."""
SYNC = 4 * 1024 * 1024
"""Bytes written per fdatasync and record of the frames they completed (an agent's body)."""


class Intake:
    """The spool side of one body: `add` pieces as they are parsed, `flush` (in a worker
    thread) when `full`, and `flush(last=True)` at the end, or when the body fails, to keep
    the frames that arrived whole."""

    def __init__(self, state: State, spool: Spool, machine: Machine, upload: Upload) -> None:
        """``spool`` is the upload's, opened for this body; `close` closes it."""
        self.state = state
        self.spool = spool
        self.machine = machine
        self.upload = upload
        self.pieces: list[Piece] = []
        self.held = 0
        self.unsynced = 0
        self.done: list[tuple[int, int, bytes]] = []
        self.hasher = blake3.blake3()
        self.frames = 0

    @property
    def full(self) -> bool:
        return self.held >= WINDOW

    def add(self, pieces: list[Piece]) -> None:
        self.pieces += pieces
        self.held += sum(len(p.data) for p in pieces)

    def flush(self, last: bool = False) -> None:
        pieces, self.pieces, self.held = self.pieces, [], 0
        starting = [(p.offset, p.length) for p in pieces if p.first]
        if starting:
            self.state.forget_received(self.upload.id, starting)
            self.done = [d for d in self.done if not _overlaps(d, starting)]
        self.spool.write([(p.offset + p.at, p.data) for p in pieces])
        for piece in pieces:
            if piece.first:
                self.hasher = blake3.blake3()
            self.hasher.update(piece.data)
            self.unsynced += len(piece.data)
            if piece.last:
                self.done.append((piece.offset, piece.length, self.hasher.digest()))
        if self.done and (last or self.unsynced >= SYNC):
            self._record()

    def close(self) -> None:
        self.spool.close()

    def _record(self) -> None:
        """Sync what was written, then record the frames it completed."""
        self.spool.sync()
        done, self.done, self.unsynced = self.done, [], 0
        self.state.add_received(self.upload.id, done)
        job = self.state.active_job(self.machine.id)
        if job is not None:
            self.state.heartbeat(job, bytes_sent=sum(FRAME.size + n for _, n, _ in done))
        metrics.add("cairn_upload_bytes_received_total", sum(n for _, n, _ in done))
        self.frames += len(done)


def _overlaps(frame: tuple[int, int, bytes], starting: list[tuple[int, int]]) -> bool:
    """Whether a frame written but not yet recorded is being overwritten: recorded after
    a body cut mid-frame, it would claim bytes it no longer holds."""
    offset, length, _ = frame
    return any(o < offset + length and offset < o + n for o, n in starting)
