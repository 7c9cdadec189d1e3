"""The recorder: writes what the workers report in small batches, then hands it to the output.

One repository operation per flush (GUIDE §3, §8): up to FLUSH_SIZE results, or whatever waited
FLUSH_INTERVAL seconds, in one short transaction (one connection), with the `running` marks (and
leases) of the jobs that started since the last flush and are still running (a job that started and
finished between two flushes goes from queued to its outcome in one write). A record reaches the
output only after that write, so a record on stdout is a record in the database; when the write fails
even after the repository's retries, the records go to the spool file instead and still reach the
output. The next flush tries the database again, so a database that comes back is used again. The
results of inputs that never got a job (their registration failed) go straight to the spool.

The other way round holds too: a record the database holds reaches the output, even when the process
is told to leave at once (a second Ctrl-C) while a write is in flight. It then leaves as soon as that
write's records are out, within LEAVE_WAIT seconds; otherwise a resume, which does not scan finished
jobs again, would never print them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from domainscan.config import Settings
from domainscan.errors import ErrorKind, StorageError
from domainscan.models import BatchReport, ScanResult
from domainscan.spool import Spool, default_spool_path

if TYPE_CHECKING:
    from domainscan.db import Repository


FLUSH_SIZE = 100  # results written per repository operation
FLUSH_INTERVAL = 0.5  # seconds a result may wait for company before it is written
HEARTBEAT_INTERVAL = 5.0  # seconds between signs of life while nothing else is written (stale after 15)
LEASE_MARGIN = 10.0  # seconds a running job's lease outlasts the domain deadline (heartbeats extend it)
LEAVE_WAIT = 2.0  # seconds a write in flight may delay leaving at once (it is one short transaction)

ResultSink = Callable[[ScanResult], None]


class Recorder:
    """Collects job transitions and results of one batch; see the module docstring."""

    def __init__(
        self, repo: Repository | None, settings: Settings, report: BatchReport, sink: ResultSink
    ) -> None:
        self._repo = repo
        self._tenant = settings.tenant
        self._lease_seconds = settings.timeout + LEASE_MARGIN
        self._report = report
        self._sink = sink
        self._spool: Spool | None = None
        self._running: list[int] = []
        self._results: list[ScanResult] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._last_write = time.monotonic()
        self._writing = False  # a write is in flight and its records are not on the output yet
        self._leaving: int | None = None  # the exit status to leave with once they are

    def started(self, job_id: int | None) -> None:
        if job_id is not None:
            self._running.append(job_id)

    def finished(self, result: ScanResult) -> None:
        self._results.append(result)
        if len(self._results) >= FLUSH_SIZE:
            self._wake.set()

    def emit_stored(self, result: ScanResult) -> None:
        """A result the repository already holds (an invalid line, stored when it was registered)."""
        self._emit(result)

    async def run(self) -> None:
        """Flush periodically until closed; the caller flushes once more after the workers are done."""
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL)
            self._wake.clear()
            await self.flush()

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    def leave(self, status: int) -> None:
        """End the process with `status` now, or, while a write is in flight, once its records are on
        the output (at most LEAVE_WAIT seconds from now). For a second Ctrl-C: no cleanup, no lost line."""
        if not self._writing:
            exit_now(status)
        self._leaving = status
        asyncio.get_running_loop().call_later(LEAVE_WAIT, exit_now, status)

    async def flush(self) -> None:
        running, self._running = self._running, []
        results, self._results = self._results, []
        if results and running:  # finished since they started: their outcome is written, no lease needed
            done = {result.job_id for result in results}
            running = [job_id for job_id in running if job_id not in done]
        self._writing = True
        try:
            await self._write(running, results)
            for result in results:
                self._emit(result)
        finally:
            self._writing = False
        if self._leaving is not None:
            exit_now(self._leaving)

    async def _write(self, running: list[int], results: list[ScanResult]) -> None:
        batch_id = self._report.batch_id
        if self._repo is not None and batch_id is not None:
            if any(result.job_id is None for result in results):  # inputs the database would not take
                self._to_spool([result for result in results if result.job_id is None])
                results = [result for result in results if result.job_id is not None]
            try:
                lease = self._lease_seconds
                if results:
                    await self._repo.finish_jobs(
                        self._tenant, batch_id, results, running=running, lease_seconds=lease
                    )
                elif running:
                    await self._repo.mark_running(self._tenant, running, lease_seconds=lease)
                elif time.monotonic() - self._last_write > HEARTBEAT_INTERVAL:
                    await self._repo.heartbeat(self._tenant, batch_id, lease_seconds=lease)
                self._last_write = time.monotonic()
            except StorageError as exc:
                self._report.storage_error = self._report.storage_error or exc
                self._to_spool(results)

    def _to_spool(self, results: list[ScanResult]) -> None:
        if not results:
            return
        if self._spool is None:
            self._spool = Spool(default_spool_path(self._tenant, self._report.batch_id))
            self._report.spool_path = str(self._spool.path)
        self._spool.write(r.to_record() for r in results)
        self._report.spooled = self._spool.count

    def close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()

    def _emit(self, result: ScanResult) -> None:
        report = self._report
        report.total += 1
        if result.ok:
            report.ok += 1
        elif result.error_kind is ErrorKind.INVALID_DOMAIN:
            report.invalid += 1
        elif result.error_kind is ErrorKind.CANCELLED:
            report.cancelled += 1
        else:
            report.failed += 1
        self._sink(result)


def exit_now(status: int) -> NoReturn:
    """Leave without cleanup (what a second signal asks for), after the output already written."""
    sys.stdout.flush()
    os._exit(status)
