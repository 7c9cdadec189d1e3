"""The intake: chunks that start small and double, what a slow source sent handed over at once, a
bounded read-ahead, a failing source's items before its error, and an event loop never blocked."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from domainscan.intake import Intake


async def chunk_sizes(intake: Intake[int]) -> list[int]:
    return [len(chunk) async for chunk in intake]


async def test_chunks_start_small_and_double_up_to_their_size() -> None:
    """The first chunk is stored before anything is scanned: it is small, and each next one (stored
    while the last is scanned) twice as big, up to the full size."""
    assert await chunk_sizes(Intake(range(2000), first=50, size=500)) == [50, 100, 200, 400, 500, 500, 250]
    assert await chunk_sizes(Intake([], first=50, size=500)) == []


async def test_what_was_read_before_the_source_failed_comes_first() -> None:
    def failing() -> Iterator[int]:
        yield from range(70)
        raise OSError("the disk went away")

    intake = Intake(failing(), first=50, size=500)
    assert await anext(intake) == list(range(50))
    assert await anext(intake) == list(range(50, 70))
    with pytest.raises(OSError, match="the disk went away"):
        await anext(intake)


async def test_a_stalled_source_hands_over_what_it_sent_and_blocks_nothing() -> None:
    """Three items, then the source waits (a pipe whose writer stalls): the three come out within about
    the linger, not when a chunk of 50 is full, and the event loop keeps running meanwhile."""
    go_on = threading.Event()

    def stalling() -> Iterator[int]:
        yield from range(3)
        go_on.wait(10)
        yield from range(3, 8)

    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    intake = Intake(stalling(), first=50, size=500, linger=0.1)
    started = time.monotonic()
    assert await asyncio.wait_for(anext(intake), 2) == [0, 1, 2]
    assert time.monotonic() - started < 1.0
    await asyncio.sleep(0.3)
    assert ticks >= 10  # the loop ran while the source was stalled
    go_on.set()
    assert await asyncio.wait_for(anext(intake), 2) == [3, 4, 5, 6, 7]
    with pytest.raises(StopAsyncIteration):
        await anext(intake)
    ticker.cancel()


async def test_the_thread_reads_only_a_little_ahead() -> None:
    """Memory stays flat: with nobody taking chunks, the thread stops after `ahead` full ones."""
    read = 0

    def counted() -> Iterator[int]:
        nonlocal read
        for n in range(100_000):
            read += 1
            yield n

    intake = Intake(counted(), first=10, size=10, ahead=2)
    assert await anext(intake) == list(range(10))
    await asyncio.sleep(0.3)
    assert read <= 10 + 2 * 10 + 1  # the chunk taken, two ready, the one that found no room
    intake.close()
