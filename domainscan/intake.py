"""The intake: inputs read on a thread of their own and handed to the event loop in chunks.

Reading an input blocks: a file on a slow disk, and above all a pipe whose writer is slow or stalled
(`producer | domainscan scan --file -`). Read on the event loop, such a read stops everything: the
scans under way, the recorder's writes and heartbeats, and the Ctrl-C handler, which runs on the loop
too. So a daemon thread reads, and the loop only waits for what it has read.

Chunks are what the pipeline stores per operation: the first one `first` inputs, each next one twice
as big, up to `size`. A chunk that has started but does not fill within `linger` seconds (a slow pipe)
is handed over as it is, so that what has arrived is scanned now. The thread reads at most `ahead`
full chunks before the loop takes them: memory stays flat whatever the input's length. When reading
fails, what was read before is still handed over first, then the error is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

_T = TypeVar("_T")

LINGER = 0.1  # seconds a started chunk may wait to fill before it is handed over as it is
AHEAD = 2  # full chunks the thread may read before the loop takes them


class Intake(Generic[_T]):
    """Chunks of `items`, read on a daemon thread; `async for chunk in intake` (see the module)."""

    def __init__(
        self, items: Iterable[_T], *, first: int, size: int, linger: float = LINGER, ahead: int = AHEAD
    ) -> None:
        self._items = items
        self._limit = first
        self._size = size
        self._linger = linger
        self._ahead = ahead
        self._lock = threading.Condition()
        self._ready: deque[list[_T]] = deque()  # full chunks
        self._current: list[_T] = []  # the chunk being read
        self._done = False
        self._error: BaseException | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()  # set (from the thread) when a chunk starts, fills or ends

    def __aiter__(self) -> Intake[_T]:
        return self

    async def __anext__(self) -> list[_T]:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            threading.Thread(target=self._read, name="domainscan-intake", daemon=True).start()
        while True:
            self._arrived.clear()
            with self._lock:
                chunk = self._take(partial=self._done)
                if chunk is None and self._done:
                    if self._error is not None:
                        error, self._error = self._error, None
                        raise error
                    raise StopAsyncIteration
                started = bool(self._current)
            if chunk is not None:
                return chunk
            if not started:
                await self._arrived.wait()
                continue
            try:  # a chunk has started: give it a moment to fill
                await asyncio.wait_for(self._arrived.wait(), self._linger)
            except TimeoutError:
                with self._lock:
                    chunk = self._take(partial=True)
                if chunk is not None:
                    return chunk

    def close(self) -> None:
        """Stop reading at the next input (a thread blocked in a read stays there: it is a daemon)."""
        with self._lock:
            self._closed = True
            self._lock.notify()

    def _take(self, *, partial: bool) -> list[_T] | None:
        """The next full chunk, or with `partial` the one being read; under the lock."""
        if self._ready:
            self._lock.notify()  # room for the thread to read on
            return self._ready.popleft()
        if partial and self._current:
            chunk, self._current = self._current, []
            return chunk
        return None

    def _read(self) -> None:
        try:
            for item in self._items:
                with self._lock:
                    if self._closed:
                        return
                    self._current.append(item)
                    if len(self._current) == 1:
                        self._wake()
                    if len(self._current) >= self._limit:
                        self._ready.append(self._current)
                        self._current = []
                        self._limit = min(2 * self._limit, self._size)
                        self._wake()
                        while len(self._ready) >= self._ahead and not self._closed:
                            self._lock.wait()
        except Exception as exc:  # noqa: BLE001 (the loop raises it, after what was read before)
            self._error = exc
        finally:
            with self._lock:
                self._done = True
            self._wake()

    def _wake(self) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            self._loop.call_soon_threadsafe(self._arrived.set)
