"""The handoff: the domains the registrar has read, on their way to the feeder, held in memory.

The registrar stores each chunk of inputs as queued jobs and offers the feeder the stored targets
with their job ids, so that a new batch's feeder need not read back from the database what was just
written there. That saves a query per chunk, and it means that a database that goes away in
mid-batch cannot keep an input it already holds from being scanned and printed.

Memory stays bounded: once the handoff holds `limit` targets, it *spills*. The registrar goes on
storing inputs ahead of the scanning (so an interrupted batch has all of them stored), but from then on
the feeder reads the later jobs back from the database, after the last job id it was handed.

Inputs the database would not take at all (registration failed for good) go through the handoff too,
without a job id; for those the registrar waits for room, since they are nowhere else.
"""

from __future__ import annotations

import asyncio
from collections import deque

from domainscan.models import Target

Handed = list[tuple[Target, int | None]]  # (target, job id), the job id None when it was not stored


class Handoff:
    """A bounded queue of chunks between one registrar and one feeder (one event loop)."""

    def __init__(self, limit: int, *, spilled: bool = False, closed: bool = False) -> None:
        """`spilled` and `closed` both true: a handoff with nothing in it and every job in the database
        (a resumed batch)."""
        self._limit = limit
        self._chunks: deque[Handed] = deque()
        self._size = 0
        self._more = asyncio.Event()  # something was held, spilled or closed (the feeder waits for it)
        self._room = asyncio.Event()  # a chunk was taken (the registrar waits for it)
        self.spilled = spilled  # the feeder must read jobs after the last handed one from the database
        self.closed = closed  # the registrar has finished: nothing more will come

    def offer(self, chunk: Handed) -> None:
        """A stored chunk: held for the feeder while there is room and nothing was spilled before;
        otherwise the handoff spills, and the feeder finds this chunk and all later ones stored."""
        if not self.spilled and self._size + len(chunk) <= self._limit:
            self._append(chunk)
        else:
            self.spilled = True
            self._more.set()

    async def put(self, chunk: Handed) -> None:
        """A chunk that is only here (not stored): held, once there is room for it."""
        while self._size and self._size + len(chunk) > self._limit:
            self._room.clear()
            await self._room.wait()
        self._append(chunk)

    def take(self) -> Handed | None:
        """The oldest chunk held, or None."""
        if not self._chunks:
            return None
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        self._room.set()
        return chunk

    def close(self) -> None:
        self.closed = True
        self._more.set()

    def watch(self) -> None:
        """Start noticing changes: call before looking at the handoff, then `changed` returns at once
        if anything happened since."""
        self._more.clear()

    async def changed(self) -> None:
        """Wait until something is held, spilled or closed after the last `watch`."""
        await self._more.wait()

    def _append(self, chunk: Handed) -> None:
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)
        self._more.set()
