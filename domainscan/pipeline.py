"""Bounded-concurrency orchestration of a batch: admit inputs, scan them, record every outcome.

Three kinds of task share one event loop:

- the *admitter* reads inputs (a stream: it never holds the whole input), registers them with the
  repository in chunks, drops duplicates, and hands targets to the workers through a bounded queue, so
  memory stays flat however long the input is;
- `concurrency` *workers* fetch and extract one domain at a time each; a slow site holds only its worker;
- the *recorder* writes what the workers report in small batches, one short repository operation each
  (GUIDE §3 and §8: a connection per transition is what made the old scanner slow), and only then
  hands each result to the output, so a record on stdout is a record in the database.

Storage is reached only through the repository API; nothing here holds a session across a fetch.
A first SIGINT/SIGTERM stops admission and cancels in-flight fetches, which are recorded as
`cancelled`; the batch is then marked `interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from domainscan.config import Settings
from domainscan.errors import ErrorKind, FetchError, StorageError
from domainscan.extract import extract, phone_region_for
from domainscan.fetch import Fetcher
from domainscan.models import Fetched, InvalidInput, ScanResult, Target

if TYPE_CHECKING:
    from domainscan.db import Repository

ADMIT_CHUNK = 100  # inputs registered per repository operation
FLUSH_SIZE = 100  # results written per repository operation
FLUSH_INTERVAL = 0.5  # seconds a result may wait for company before it is written
THREAD_PARSE_BYTES = 1 << 20  # bodies larger than this are parsed off the event loop

ResultSink = Callable[[ScanResult], None]


@dataclass(slots=True)
class BatchReport:
    """What a finished (or stopped) batch amounted to; the CLI turns it into a summary and exit code."""

    batch_id: int | None
    status: str  # complete | interrupted | failed
    total: int = 0
    ok: int = 0
    failed: int = 0
    invalid: int = 0
    cancelled: int = 0
    duplicates: int = 0
    elapsed_s: float = 0.0
    signal: int | None = None
    storage_error: StorageError | None = None

    @property
    def rate(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def invalid_result(item: InvalidInput, tenant: str) -> ScanResult:
    where = f"line {item.line}: " if item.line is not None else ""
    return ScanResult(
        domain=None,
        input=item.input,
        tenant=tenant,
        scanned_at=utc_now(),
        error_kind=ErrorKind.INVALID_DOMAIN,
        error=f"{where}{item.reason}",
        line=item.line,
    )


async def scan_one(fetcher: Fetcher, target: Target, settings: Settings) -> ScanResult:
    """Fetch one homepage and extract its facts; every failure becomes an error record, none escapes."""
    started = time.monotonic()
    result = ScanResult(
        domain=target.domain,
        input=target.input,
        tenant=settings.tenant,
        scanned_at=utc_now(),
        line=target.line,
    )
    try:
        fetched = await fetcher.fetch(target)
    except FetchError as exc:
        result.error_kind, result.error = exc.kind, exc.message
        result.url, result.redirects = exc.url, list(exc.redirects)
        result.elapsed_ms = round((time.monotonic() - started) * 1000)
        return result
    _describe_response(result, fetched)
    if fetched.http_status >= 400:
        result.error_kind = ErrorKind.HTTP_STATUS
        result.error = f"the homepage answered HTTP {fetched.http_status}"
    elif not fetched.is_html:
        result.error_kind = ErrorKind.NOT_HTML
        result.error = f"the homepage is not HTML ({fetched.content_type or 'no content type'})"
    else:
        region = settings.phone_region or phone_region_for(target.host)
        args = (fetched.body, fetched.url, fetched.headers)
        if len(fetched.body) > THREAD_PARSE_BYTES:
            result.facts = await asyncio.to_thread(
                extract, *args, encoding=fetched.encoding, phone_region=region
            )
        else:
            result.facts = extract(*args, encoding=fetched.encoding, phone_region=region)
    result.elapsed_ms = round((time.monotonic() - started) * 1000)
    return result


def _describe_response(result: ScanResult, fetched: Fetched) -> None:
    result.url = fetched.url
    result.http_status = fetched.http_status
    result.redirects = list(fetched.redirects)
    result.server = fetched.server
    result.content_type = fetched.content_type
    result.bytes = len(fetched.body)
    result.truncated = fetched.truncated


def _chunks(items: Iterable[Target | InvalidInput], size: int) -> Iterator[list[Target | InvalidInput]]:
    """Lists of up to `size` items; when reading fails, what was read before is still yielded first."""
    it = iter(items)
    while True:
        chunk: list[Target | InvalidInput] = []
        try:
            for item in it:
                chunk.append(item)
                if len(chunk) == size:
                    break
        except Exception:
            if chunk:
                yield chunk
            raise
        if not chunk:
            return
        yield chunk


class _Recorder:
    """Collects job transitions and results; writes them in short batches, then emits the results."""

    def __init__(
        self,
        repo: Repository | None,
        settings: Settings,
        batch_id: int | None,
        sink: ResultSink,
        report: BatchReport,
    ) -> None:
        self._repo = repo
        self._tenant = settings.tenant
        self._batch_id = batch_id
        self._sink = sink
        self._report = report
        self._running: list[int] = []
        self._results: list[ScanResult] = []
        self._wake = asyncio.Event()
        self._closed = False

    def started(self, job_id: int | None) -> None:
        if job_id is not None:
            self._running.append(job_id)

    def finished(self, result: ScanResult) -> None:
        self._results.append(result)
        if len(self._results) >= FLUSH_SIZE:
            self._wake.set()

    async def run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL)
            self._wake.clear()
            await self.flush()

    async def close(self) -> None:
        """Stop the periodic loop (after the caller has awaited it) and write what is left."""
        self._closed = True
        self._wake.set()

    async def flush(self) -> None:
        running, self._running = self._running, []
        results, self._results = self._results, []
        if self._repo is not None and self._batch_id is not None and (running or results):
            try:
                if running:
                    await self._repo.mark_running(self._tenant, running)
                if results:
                    await self._repo.finish_jobs(self._tenant, self._batch_id, results)
            except StorageError as exc:
                # The records still reach the output below; the run ends with exit 3.
                self._report.storage_error = self._report.storage_error or exc
                self._repo = None
        for result in results:
            self._count(result)
            self._sink(result)

    def _count(self, result: ScanResult) -> None:
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


class Pipeline:
    """Runs one batch. Build it with the settings, a repository (or None for --no-store) and a sink."""

    def __init__(
        self, settings: Settings, *, repo: Repository | None, sink: ResultSink, fetcher: Fetcher | None = None
    ) -> None:
        self._settings = settings
        self._repo = repo
        self._sink = sink
        self._fetcher = fetcher
        self._stop_signal: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._batch_id: int | None = None
        self._failure: BaseException | None = None

    @property
    def stopping(self) -> bool:
        return self._stop_signal is not None

    def stop(self, signum: int) -> None:
        """Stop admitting and cancel in-flight scans; safe to call from a signal handler."""
        if self._stop_signal is None:
            self._stop_signal = signum
            for task in self._tasks:
                task.cancel()

    async def run(self, items: Iterable[Target | InvalidInput], *, source: str) -> BatchReport:
        settings, repo = self._settings, self._repo
        started = time.monotonic()
        batch_id = None
        if repo is not None:
            batch_id = await repo.start_batch(settings.tenant, source, dict(settings.options))
        self._batch_id = batch_id
        report = BatchReport(batch_id=batch_id, status="running")
        recorder = _Recorder(repo, settings, batch_id, self._sink, report)
        queue: asyncio.Queue[tuple[Target, int | None] | None] = asyncio.Queue(settings.concurrency)
        fetcher = self._fetcher or Fetcher(settings)
        async with fetcher:
            recorder_task = asyncio.create_task(recorder.run())
            workers = [
                asyncio.create_task(self._work(fetcher, queue, recorder)) for _ in range(settings.concurrency)
            ]
            admitter = asyncio.create_task(self._admit(items, queue, recorder, report))
            self._tasks = [admitter, *workers]
            if self._stop_signal is not None:  # a signal arrived before the tasks existed
                for task in self._tasks:
                    task.cancel()
            for worker in workers:
                worker.add_done_callback(self._on_worker_done)
            await asyncio.wait([admitter])
            failure = None if admitter.cancelled() else admitter.exception()
            if not admitter.cancelled():
                # Admitted inputs are finished even when reading the rest failed (an unreadable file).
                for _ in workers:
                    await queue.put(None)
            await asyncio.wait(workers)
            self._cancel_queued(queue, recorder)
            await recorder.close()
            await recorder_task
            await recorder.flush()
            failure = failure or self._failure
        report.elapsed_s = time.monotonic() - started
        report.signal = self._stop_signal
        if failure is not None or report.storage_error is not None:
            report.status = "failed"
        else:
            report.status = "interrupted" if self._stop_signal is not None else "complete"
        if repo is not None and batch_id is not None and report.storage_error is None:
            try:
                await repo.finish_batch(settings.tenant, batch_id, report.status)
            except StorageError as exc:
                report.storage_error = exc
        if failure is not None:
            raise failure
        return report

    def _on_worker_done(self, task: asyncio.Task[None]) -> None:
        """A worker that died of a bug stops the batch (never silently): the error is raised at the end."""
        if not task.cancelled() and (exc := task.exception()) is not None and self._failure is None:
            self._failure = exc
            for other in self._tasks:
                other.cancel()

    async def _admit(
        self,
        items: Iterable[Target | InvalidInput],
        queue: asyncio.Queue[tuple[Target, int | None] | None],
        recorder: _Recorder,
        report: BatchReport,
    ) -> None:
        settings, repo = self._settings, self._repo
        seen: set[str] = set()  # only without storage; with it, the database knows the batch's domains
        for chunk in _chunks(items, ADMIT_CHUNK):
            if repo is not None and report.batch_id is not None:
                # Shielded: a stop must not cut a registration in half; its rows are then cancelled below.
                job_ids = await asyncio.shield(repo.add_jobs(settings.tenant, report.batch_id, chunk))
            else:
                job_ids = self._dedupe(chunk, seen)
            pending = list(zip(chunk, job_ids, strict=True))
            try:
                while pending:
                    item, job_id = pending[0]
                    if job_id is None:
                        report.duplicates += 1
                    elif isinstance(item, InvalidInput):
                        result = invalid_result(item, settings.tenant)
                        result.job_id, result.batch_id = job_id or None, report.batch_id
                        recorder.finished(result)
                    else:
                        await queue.put((item, job_id or None))
                    pending.pop(0)
            except asyncio.CancelledError:
                for item, job_id in pending:
                    if job_id is not None and isinstance(item, Target):
                        recorder.finished(self._cancelled(item, job_id or None))
                raise

    @staticmethod
    def _dedupe(chunk: list[Target | InvalidInput], seen: set[str]) -> list[int | None]:
        """Without storage: 0 for an input to scan (no job id), None for a domain already seen."""
        job_ids: list[int | None] = []
        for item in chunk:
            if isinstance(item, Target):
                job_ids.append(None if item.domain in seen else 0)
                seen.add(item.domain)
            else:
                job_ids.append(0)
        return job_ids

    async def _work(
        self, fetcher: Fetcher, queue: asyncio.Queue[tuple[Target, int | None] | None], recorder: _Recorder
    ) -> None:
        while (entry := await queue.get()) is not None:
            target, job_id = entry
            recorder.started(job_id)
            try:
                result = await scan_one(fetcher, target, self._settings)
            except asyncio.CancelledError:
                recorder.finished(self._cancelled(target, job_id))
                return
            result.job_id, result.batch_id = job_id, self._batch_id
            recorder.finished(result)

    def _cancel_queued(
        self, queue: asyncio.Queue[tuple[Target, int | None] | None], recorder: _Recorder
    ) -> None:
        """Admitted but never started: recorded as cancelled, so every admitted input ends terminal."""
        while not queue.empty():
            entry = queue.get_nowait()
            if entry is not None:
                recorder.finished(self._cancelled(*entry))

    def _cancelled(self, target: Target, job_id: int | None) -> ScanResult:
        return ScanResult(
            domain=target.domain,
            input=target.input,
            tenant=self._settings.tenant,
            scanned_at=utc_now(),
            error_kind=ErrorKind.CANCELLED,
            error="cancelled: the batch was interrupted before this domain finished",
            line=target.line,
            job_id=job_id,
            batch_id=self._batch_id,
        )


async def run_batch(
    settings: Settings,
    items: Iterable[Target | InvalidInput],
    *,
    source: str,
    repo: Repository | None,
    sink: ResultSink,
) -> BatchReport:
    """Run a batch with SIGINT/SIGTERM wired to a graceful stop (a second signal exits at once)."""
    pipeline = Pipeline(settings, repo=repo, sink=sink)
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if pipeline.stopping:  # a second signal: leave now; every write is one transaction, so the
            sys.stdout.flush()  # database holds whole operations only
            os._exit(128 + signum)
        pipeline.stop(signum)

    handled = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, on_signal, signum)
            handled.append(signum)
    try:
        return await pipeline.run(items, source=source)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)
