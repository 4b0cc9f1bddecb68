"""Read-ahead follows each stream of reads on its own, with a window that grows as it goes."""

from __future__ import annotations

from cairn.store.readahead import FIRST_WINDOW, MAX_WINDOW, ReadAhead

REQUEST = 4  # blocks of one 256 KiB NBD request at 64 KiB blocks


def _stream(ahead: ReadAhead, start: int, requests: int) -> list[range]:
    return [ahead.follow(first, first + REQUEST - 1)
            for first in range(start, start + requests * REQUEST, REQUEST)]


def test_a_stream_fetches_each_block_once_in_growing_batches_up_to_the_window() -> None:
    """The second read starts the read-ahead past itself; each block after is asked for
    once, in order, in batches that grow from FIRST_WINDOW (fewer, bigger reads of the
    store) while the blocks ahead never lead the reads by more than MAX_WINDOW."""
    ahead = ReadAhead(100_000)
    asked = _stream(ahead, 0, 400)
    blocks = [block for batch in asked for block in batch]
    assert blocks == list(range(2 * REQUEST, blocks[-1] + 1))
    sizes = [len(batch) for batch in asked if batch]
    assert sizes[0] == FIRST_WINDOW
    assert sizes == sorted(sizes)
    assert MAX_WINDOW // 2 < sizes[-1] <= MAX_WINDOW
    assert 400 * REQUEST + MAX_WINDOW // 2 <= blocks[-1] + 1 <= 400 * REQUEST + MAX_WINDOW


def test_two_interleaved_streams_keep_their_own_read_ahead() -> None:
    """Two connections copying two halves of a disk: both read ahead, neither restarts."""
    ahead = ReadAhead(100_000)
    low, high = 0, 32_768
    asked: dict[int, list[int]] = {low: [], high: []}
    for step in range(0, 200 * REQUEST, REQUEST):
        for base in (low, high):
            asked[base] += ahead.follow(base + step, base + step + REQUEST - 1)
    for base, blocks in asked.items():
        assert blocks == list(range(base + 2 * REQUEST, blocks[-1] + 1))
        assert blocks[-1] >= base + 200 * REQUEST


def test_requests_answered_out_of_order_continue_the_stream() -> None:
    """Requests reach the reader slightly out of order (a pool serves them): a late one
    fetches nothing and does not start a stream of its own."""
    ahead = ReadAhead(100_000)
    _stream(ahead, 0, 3)
    assert ahead.follow(20, 23)  # one ran ahead of its neighbours
    assert not ahead.follow(12, 15)
    assert not ahead.follow(16, 19)
    assert ahead.follow(24, 27) or ahead.follow(28, 31)


def test_random_reads_and_a_read_of_one_block_in_pieces_fetch_nothing_ahead() -> None:
    ahead = ReadAhead(100_000)
    assert not any(ahead.follow(block, block) for block in (500, 9000, 70, 40_000, 3))
    assert not any(ahead.follow(7, 7) for _ in range(16))  # 4 KiB pieces of block 7


def test_read_ahead_stops_at_the_last_block() -> None:
    ahead = ReadAhead(10)
    asked = [block for batch in _stream(ahead, 0, 2) for block in batch]
    assert asked == [8, 9]


def test_a_read_continues_the_stream_that_ended_nearest_it() -> None:
    """Two streams close together (the halves of a small disk): the upper one's read-ahead
    window reaches back over the lower one's next reads, which still continue the lower
    stream, so every block of both halves past their first two reads is read ahead."""
    ahead = ReadAhead(64)
    asked: set[int] = set()
    for step in range(0, 32, REQUEST):
        for base in (0, 32):
            asked.update(ahead.follow(base + step, base + step + REQUEST - 1))
    assert asked >= set(range(2 * REQUEST, 32)) | set(range(32 + 2 * REQUEST, 64))
