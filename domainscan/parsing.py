"""Where homepages are parsed: in worker processes beside the event loop, or in the loop itself.

Why processes: a scan is CPU-bound on both sides of the network. The event loop's share (connections,
requests, records, output) and extraction's share (lxml's parse, the tree walk, the contact, social and
tech readers: a few milliseconds for a 60 KiB page) each fill a core on a fast network, and threads
cannot run Python side by side. With parse workers the loop keeps fetching while other cores parse
(bench/ measures it); a page that crashes the parser (a libxml2 bug, memory exhausted) costs that page,
not the batch.

Pages travel over a socket pair per worker, as a length-prefixed pickle, read and written by the event
loop itself (asyncio streams); in the worker a thread reads them ahead of the parsing, so a busy event
loop never leaves the worker idle. ``concurrent.futures.ProcessPoolExecutor`` was measured first: its two
helper threads in the main process (queue management and pickling) cost about as much CPU as the
parsing they saved the event loop, on both sides of the pipe.

The workers are fresh interpreters (``python -m domainscan.parseworker``), not forks (the loop's process
has threads by then, and multiprocessing's spawn would add a resource-tracker process); they ignore
SIGINT and SIGTERM, which a terminal or a supervisor sends to the whole process group, because the
main process decides what a signal means for the batch; and they exit by themselves once the main
process is gone, even when it was killed without a chance to stop them.

``--parse-workers 0`` parses in the loop's process (bodies over a MiB in a thread, so a huge page
cannot stall the loop): the right choice on one core, and what tests use by default.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import pickle
import socket
import subprocess
import sys
from types import TracebackType
from typing import Any

from domainscan.models import Fetched, PageFacts
from domainscan.parseworker import HEADER, page_facts

THREAD_PARSE_BYTES = 1 << 20  # in-process parsing: bodies larger than this are parsed off the event loop
_STOP_WAIT = 5.0  # seconds a worker gets to exit after its socket closes, before it is killed
_SEND_BUFFER = 1 << 20  # asked for the pages' socket; the system may give less (net.core.wmem_max)

_log = logging.getLogger("domainscan.parsing")


class _WorkerDied(Exception):
    """The worker's socket closed before it answered: it crashed, or was killed."""


class _Worker:
    """One parse worker process and the main process's end of its socket."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        # Room in the kernel for pages on their way, so the event loop hands them over and moves on
        # (the default, a few hundred KiB, is a dozen pages; see parseworker._Inbox for the worker's side).
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
        # A plain interpreter, not multiprocessing's spawn: that also starts a resource-tracker process
        # (13 MB) this protocol has no use for.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "domainscan.parseworker", str(theirs.fileno()), str(os.getpid())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._socket = ours
        self._pending: dict[int, asyncio.Future[PageFacts]] = {}
        self._ids = itertools.count()
        self._reading: asyncio.Task[None] | None = None
        self._ready = asyncio.ensure_future(self._connect())
        self.alive = True
        self.started = False  # set when the worker says it is ready

    @property
    def load(self) -> int:
        return len(self._pending)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The socket wrapped in streams, once (one transport per socket), and its reader started."""
        reader, writer = await asyncio.open_unix_connection(sock=self._socket)
        self._reading = asyncio.create_task(self._read(reader))
        return reader, writer

    async def call(self, args: tuple[Any, ...]) -> PageFacts:
        _, writer = await self._ready
        if not self.alive:
            raise _WorkerDied
        request_id = next(self._ids)
        answer: asyncio.Future[PageFacts] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = answer
        message = pickle.dumps((request_id, args), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            writer.write(len(message).to_bytes(HEADER, "big") + message)
            await writer.drain()
            return await answer
        except ConnectionError as exc:
            raise _WorkerDied from exc
        finally:
            self._pending.pop(request_id, None)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(HEADER), "big")
                if size == 0:  # the worker is up: imported, warmed, listening
                    self.started = True
                    continue
                request_id, facts = pickle.loads(await reader.readexactly(size))
                answer = self._pending.get(request_id)
                if answer is not None and not answer.done():
                    answer.set_result(facts)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.alive = False
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(_WorkerDied())

    async def stop(self) -> None:
        """Close the socket (the worker exits when it sees that) and wait for the process to go."""
        self.alive = False
        try:
            _, writer = await self._ready
            writer.close()
        except OSError:
            self._socket.close()
        if self._reading is not None:
            self._reading.cancel()
        await asyncio.to_thread(self._reap)

    def _reap(self) -> None:
        try:
            self.process.wait(_STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class PageParser:
    """Turns fetched homepages into PageFacts for a whole batch; safe for concurrent calls.

    Use as an async context manager: the worker processes start on entry (warming up while the first
    homepages are fetched) and stop on exit.
    """

    def __init__(self, workers: int) -> None:
        self._size = workers
        self._workers: list[_Worker] = []
        self._stopping: set[asyncio.Task[None]] = set()  # the dead workers being reaped
        self._started = False  # whether any worker ever said it was ready

    async def __aenter__(self) -> PageParser:
        self._workers = [_Worker() for _ in range(self._size)]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        workers, self._workers = self._workers, []
        await asyncio.gather(*(worker.stop() for worker in workers), *self._stopping)

    @property
    def pids(self) -> list[int]:
        """The process ids of the live workers."""
        return [worker.process.pid for worker in self._workers]

    async def facts(self, fetched: Fetched, *, host: str, phone_region: str | None) -> PageFacts:
        """The facts of `fetched` (an HTML homepage) of the site scanned as `host`."""
        args = (fetched.body, fetched.url, fetched.headers, fetched.encoding, phone_region, host)
        tries = 0
        while self._workers and tries < 2:
            tries += 1
            worker = min(self._workers, key=lambda w: w.load)
            try:
                return await worker.call(args)
            except _WorkerDied:
                # Killed, or crashed on some page: a new worker takes its place, the page one more try.
                self._started |= worker.started
                self._replace(worker)
        if self._workers and self._started:
            _log.warning("%s: the page parser crashed twice on this homepage; its facts are left empty", host)
            return PageFacts()
        if self._workers:
            # No worker ever got as far as saying it was ready: they cannot start here (an interpreter
            # that cannot run `python -m domainscan.parseworker`, say). Parse here rather than lose
            # every page.
            _log.warning("parse workers could not start; parsing in the main process (--parse-workers 0)")
            self._stopping.update(asyncio.create_task(worker.stop()) for worker in self._workers)
            self._workers = []
        if len(fetched.body) > THREAD_PARSE_BYTES:
            return await asyncio.to_thread(page_facts, *args)
        return page_facts(*args)

    def _replace(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
            self._workers.append(_Worker())
            self._stopping.add(asyncio.create_task(worker.stop()))
