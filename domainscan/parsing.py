"""Where homepages are parsed: in worker processes beside the event loop, or in the loop itself.

Why processes: a scan is CPU-bound on both sides of the network. The event loop's share (connections,
requests, records, output) and extraction's share (lxml's parse, the tree walk, the contact, social and
tech readers: a few milliseconds for a 60 KiB page) each fill a core on a fast network, and threads
cannot run Python side by side. With parse workers the loop keeps fetching while other cores parse
(bench/ measures it); a page that crashes the parser (a libxml2 bug, memory exhausted) costs that page,
not the batch.

The workers are spawned, not forked (the loop's process has threads by then); they ignore SIGINT and
SIGTERM, which a terminal or a supervisor sends to the whole process group, because the main process
decides what a signal means for the batch; and they exit by themselves once the main process is gone,
even when it was killed without a chance to stop them.

``--parse-workers 0`` parses in the loop's process (bodies over a MiB in a thread, so a huge page
cannot stall the loop): the right choice on one core, and what tests use by default.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType

from domainscan.models import Fetched, PageFacts

THREAD_PARSE_BYTES = 1 << 20  # in-process parsing: bodies larger than this are parsed off the event loop
_PARENT_POLL = 1.0  # seconds between a worker's looks at whether its parent is still there

_log = logging.getLogger("domainscan.parsing")


def page_facts(
    body: bytes,
    url: str,
    headers: Mapping[str, str],
    encoding: str | None,
    phone_region: str | None,
    host: str,
) -> PageFacts:
    """The facts of one homepage (what runs in a worker). National phone numbers are read in
    `phone_region`, by default the one the scanned `host`'s country TLD suggests."""
    from domainscan.extract import extract, phone_region_for

    region = phone_region or phone_region_for(host)
    return extract(body, url, headers, encoding=encoding, phone_region=region)


class PageParser:
    """Turns fetched homepages into PageFacts for a whole batch; safe for concurrent calls.

    Use as an async context manager: the worker processes start on entry (warming up while the first
    homepages are fetched) and stop on exit.
    """

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def __aenter__(self) -> PageParser:
        if self._workers > 0:
            self._pool = self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def facts(self, fetched: Fetched, *, host: str, phone_region: str | None) -> PageFacts:
        """The facts of `fetched` (an HTML homepage) of the site scanned as `host`."""
        args = (fetched.body, fetched.url, fetched.headers, fetched.encoding, phone_region, host)
        if self._pool is None:
            if len(fetched.body) > THREAD_PARSE_BYTES:
                return await asyncio.to_thread(page_facts, *args)
            return page_facts(*args)
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            pool = self._pool
            try:
                return await loop.run_in_executor(pool, page_facts, *args)
            except BrokenProcessPool:
                # A worker died (killed, or crashed on some page): start new workers once and try again.
                if self._pool is pool:
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._start()
                if attempt:
                    break
        _log.warning("%s: the page parser crashed twice on this homepage; its facts are left empty", host)
        return PageFacts()

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(os.getpid(),),
        )
        for _ in range(self._workers):
            pool.submit(_warm_up)  # import and load what parsing needs before the first page arrives
        return pool


def _init_worker(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker of a main process that was killed (SIGKILL, a crash) would otherwise wait forever."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL)
    os._exit(0)


def _warm_up() -> None:
    from domainscan import contacts, tech

    tech.fingerprints()
    contacts.emails([], ["warm@example.com"])
