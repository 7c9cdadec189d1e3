"""Bounded-concurrency orchestration of a batch: register inputs, scan them, record every outcome.

With storage, four kinds of task share one event loop:

- the *registrar* reads the inputs (a stream, never held whole, read on a thread by
  :mod:`domainscan.intake` so that a stalled pipe blocks nothing) and stores them as the batch's queued
  jobs, a chunk per short transaction; the database drops duplicates. It runs ahead of the scanning, so
  an interrupted batch has its inputs stored and `--resume` never re-reads a file that may have changed.
  It hands what it stored to the feeder in memory (:mod:`domainscan.handoff`), up to HANDOFF_LIMIT
  domains ahead; beyond that the feeder reads the jobs back. Should storing inputs fail for good (the
  database gone), the batch goes on: the rest of the inputs are scanned without a job, and their
  records, printed as always, go to the spool, from which `domainscan import` stores them;
- the *feeder* hands the registrar's jobs to the workers through a bounded queue, then pages through
  the batch's queued jobs (keyset on the job id) if the registrar ran further ahead, so memory stays
  flat however long the input is. `--resume` runs the feeder alone, over what the repository re-queued;
- `concurrency` *workers* scan one domain at a time each (`scan.scan_one`); a slow site holds only its
  own worker;
- the *recorder* writes transitions and results in small batches and only then emits them.

Without storage (`--no-store`) an *admitter* deduplicates in memory and feeds the workers directly.

A first SIGINT/SIGTERM stops registration and feeding and cancels in-flight scans, which are recorded
as `cancelled`; jobs not yet started stay queued; the batch is marked `interrupted`. A second signal
exits at once: every write is one transaction, so the database holds whole operations only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from domainscan.config import Settings
from domainscan.domains import normalize
from domainscan.errors import InvalidDomain, StorageError
from domainscan.fetch import PARALLEL_PER_DOMAIN, Fetcher
from domainscan.handoff import Handed, Handoff
from domainscan.intake import Intake
from domainscan.models import BatchInfo, BatchReport, InvalidInput, JobInfo, Target
from domainscan.parsing import PageParser
from domainscan.recorder import Recorder, ResultSink, exit_now
from domainscan.scan import cancelled_result, invalid_result, scan_one

if TYPE_CHECKING:
    from domainscan.db import Repository

REGISTER_CHUNK = 500  # inputs stored per repository operation
HANDOFF_LIMIT = 10_000  # stored domains the registrar may hold for the feeder (a few MB)
FEED_CHUNK = 500  # queued jobs read back per repository operation (one short transaction each)
FEED_ATTEMPTS = 3  # reads of queued jobs tried, each with the repository's retries, before giving up
LEASE_POLL = 1.0  # seconds between looks at the jobs a resume waits for (another owner's live lease)
_FILES_BESIDES_CONNECTIONS = 256  # the database's, the parse workers', output, spool, the interpreter's

Work = asyncio.Queue[tuple[Target, int | None] | None]

_log = logging.getLogger(__name__)


class Pipeline:
    """Runs one batch: `run` for new inputs, `resume` for a stored batch's unfinished jobs."""

    def __init__(
        self,
        settings: Settings,
        *,
        repo: Repository | None,
        sink: ResultSink,
        fetcher: Fetcher | None = None,
        parser: PageParser | None = None,
    ) -> None:
        """`parser`, when given, is started and stopped by the caller (who may start it early)."""
        self._settings = settings
        self._repo = repo
        self._sink = sink
        self._fetcher = fetcher
        self._parser = parser
        self._stop_signal: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._failure: BaseException | None = None
        self._recorder: Recorder | None = None

    @property
    def stopping(self) -> bool:
        return self._stop_signal is not None

    def leave(self, status: int) -> None:
        """End the process at once with `status` (a second signal); a write in flight is let finish
        and its records printed first (:meth:`Recorder.leave`)."""
        if self._recorder is None:
            exit_now(status)
        self._recorder.leave(status)  # now, or once the write in flight is out

    def stop(self, signum: int) -> None:
        """Stop taking work and cancel in-flight scans; safe to call from a signal handler."""
        if self._stop_signal is None:
            self._stop_signal = signum
            for task in self._tasks:
                task.cancel()

    async def run(self, items: Iterable[Target | InvalidInput], *, source: str) -> BatchReport:
        settings, repo = self._settings, self._repo
        if repo is None:
            report = BatchReport(batch_id=None)
            return await self._execute(report, lambda queue, rec: self._admit(items, queue, rec, report))
        batch_id = await repo.start_batch(settings.tenant, source, dict(settings.options))
        report = BatchReport(batch_id=batch_id)
        handoff = Handoff(HANDOFF_LIMIT)

        async def produce(queue: Work, recorder: Recorder) -> None:
            registrar = asyncio.create_task(self._register(items, recorder, report, handoff))
            self._tasks.append(registrar)
            try:
                await self._feed(queue, report, handoff)
            finally:
                registrar.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await registrar

        return await self._execute(report, produce)

    async def resume(self, batch_id: int) -> tuple[BatchInfo, BatchReport]:
        """Scan the batch's jobs that have no succeeded or failed outcome (the repository re-queues
        cancelled jobs and running ones whose lease expired); returns the batch as it was found."""
        if self._repo is None:
            raise StorageError("--resume needs the database the batch is stored in")
        repo, tenant = self._repo, self._settings.tenant
        info = await repo.reopen_batch(tenant, batch_id)
        report = BatchReport(batch_id=batch_id)
        if info.status == "complete":
            report.status = "complete"
            return info, report
        # Running jobs that reopen_batch left alone: their lease (a dead process's, most likely) is live.
        leased = {job.id async for job in repo.list_jobs(tenant, batch_id=batch_id, status="running")}

        async def produce(queue: Work, recorder: Recorder) -> None:
            await self._feed(queue, report, Handoff(0, spilled=True, closed=True))
            await self._feed_leased(queue, report, leased)

        return info, await self._execute(report, produce)

    async def _execute(
        self, report: BatchReport, produce: Callable[[Work, Recorder], Coroutine[Any, Any, None]]
    ) -> BatchReport:
        """Workers and recorder around a producer; the batch's final state written at the end."""
        settings, repo = self._settings, self._repo
        started = time.monotonic()
        # A domain holds a connection per request in flight, and one per host its redirects passed.
        allow_open_files(settings.concurrency * PARALLEL_PER_DOMAIN)
        recorder = self._recorder = Recorder(repo, settings, report, self._sink)
        queue: Work = asyncio.Queue(settings.concurrency)
        fetcher = self._fetcher or Fetcher(settings)
        async with fetcher, contextlib.AsyncExitStack() as owned:
            parser = self._parser
            if parser is None:
                made = PageParser(settings.parse_workers if settings.homepage else 0)
                parser = await owned.enter_async_context(made)
            recorder_task = asyncio.create_task(recorder.run())
            workers = [
                asyncio.create_task(self._work(fetcher, parser, queue, recorder, report))
                for _ in range(settings.concurrency)
            ]
            producer = asyncio.create_task(produce(queue, recorder))
            self._tasks += [producer, *workers]
            if self._stop_signal is not None:  # a signal arrived before the tasks existed
                for task in self._tasks:
                    task.cancel()
            for worker in workers:
                worker.add_done_callback(self._on_worker_done)
            await asyncio.wait([producer])
            failure = None if producer.cancelled() else producer.exception()
            if not producer.cancelled():
                # What was handed out is finished even when producing more failed.
                for _ in workers:
                    await queue.put(None)
            await asyncio.wait(workers)
            self._cancel_queued(queue, recorder, report)
            recorder.close()
            await recorder_task
            await recorder.flush()
            recorder.close_spool()
        failure = failure or self._failure
        if isinstance(failure, StorageError):  # the database left for good: in-flight work is spooled
            report.storage_error = report.storage_error or failure
            failure = None
        report.elapsed_s = time.monotonic() - started
        report.signal = self._stop_signal
        if failure is not None or (report.storage_error is not None and self._stop_signal is None):
            report.status = "failed" if failure is not None else "interrupted"
        else:
            report.status = "interrupted" if self._stop_signal is not None else "complete"
        if repo is not None and report.batch_id is not None:
            # After a storage error, one quick try: a database that is back by now learns that no
            # process runs the batch any more (interrupted), so that a resume right after the import
            # need not wait for the batch's heartbeat to go stale.
            patient = report.storage_error is None
            try:
                await repo.finish_batch(settings.tenant, report.batch_id, report.status, patient=patient)
            except StorageError as exc:
                report.storage_error = report.storage_error or exc
        if failure is not None:
            raise failure
        return report

    def _on_worker_done(self, task: asyncio.Task[None]) -> None:
        """A worker that died of a bug stops the batch (never silently): the error is raised at the end."""
        if not task.cancelled() and (exc := task.exception()) is not None and self._failure is None:
            self._failure = exc
            for other in self._tasks:
                other.cancel()

    async def _register(
        self,
        items: Iterable[Target | InvalidInput],
        recorder: Recorder,
        report: BatchReport,
        handoff: Handoff,
    ) -> None:
        """Store every input as a queued job of the batch (invalid lines stored already failed) and
        hand the stored targets on; if the database fails for good, hand the rest on unstored."""
        repo, tenant, batch_id = self._repo, self._settings.tenant, report.batch_id
        assert repo is not None
        assert batch_id is not None
        intake = self._intake(items)
        try:
            async for chunk in intake:
                try:
                    # Shielded: a stop must not cut a registration in half.
                    job_ids = await asyncio.shield(repo.add_jobs(tenant, batch_id, chunk))
                except StorageError as exc:
                    report.storage_error = report.storage_error or exc
                    _log.warning("%s; the remaining inputs are scanned and spooled", exc)
                    await self._hand_on_unstored(chunk, intake, recorder, report, handoff)
                    return
                stored: Handed = []
                for item, job_id in zip(chunk, job_ids, strict=True):
                    if job_id is None:
                        report.duplicates += 1
                    elif isinstance(item, InvalidInput):
                        result = invalid_result(item, tenant)
                        result.job_id, result.batch_id = job_id, batch_id
                        recorder.emit_stored(result)
                    else:
                        stored.append((item, job_id))
                handoff.offer(stored)
        finally:
            intake.close()
            handoff.close()

    def _intake(self, items: Iterable[Target | InvalidInput]) -> Intake[Target | InvalidInput]:
        """The inputs in chunks, read on a thread. The first chunk is just enough to give every worker
        a domain, and each next one is stored while the last is scanned: scanning starts after storing
        the first, and storing 500 took 150 ms (PostgreSQL, the bench farm)."""
        return Intake(items, first=min(self._settings.concurrency, REGISTER_CHUNK), size=REGISTER_CHUNK)

    async def _hand_on_unstored(
        self,
        failed: list[Target | InvalidInput],
        intake: Intake[Target | InvalidInput],
        recorder: Recorder,
        report: BatchReport,
        handoff: Handoff,
    ) -> None:
        """The inputs the database would not take (`failed`, and the rest of `intake`), scanned
        without a job; the recorder spools their records, with the batch id."""

        async def chunks() -> AsyncIterator[list[Target | InvalidInput]]:
            yield failed
            async for chunk in intake:
                yield chunk

        async for unstored in self._deduplicated(chunks(), recorder, report):
            await handoff.put(unstored)

    async def _deduplicated(
        self, chunks: AsyncIterator[list[Target | InvalidInput]], recorder: Recorder, report: BatchReport
    ) -> AsyncIterator[Handed]:
        """Inputs without a job (no storage, or none the database would take): each chunk's targets
        not seen before, deduplicated in memory; invalid inputs recorded at once."""
        tenant = self._settings.tenant
        seen: set[str] = set()
        async for chunk in chunks:
            unstored: Handed = []
            for item in chunk:
                if isinstance(item, InvalidInput):
                    result = invalid_result(item, tenant)
                    result.batch_id = report.batch_id
                    recorder.finished(result)
                elif item.domain in seen:
                    report.duplicates += 1
                else:
                    seen.add(item.domain)
                    unstored.append((item, None))
            yield unstored

    async def _feed(self, queue: Work, report: BatchReport, handoff: Handoff) -> None:
        """Hand the batch's jobs to the workers, oldest first: those the registrar hands over, then,
        once it ran further ahead than the handoff holds, those stored after them. When reading them
        back fails for good, what the registrar still hands over (inputs it could not store either)
        is scanned before the error stands."""
        after = 0
        failure: StorageError | None = None
        while True:
            handoff.watch()
            closed = handoff.closed
            if (chunk := handoff.take()) is not None:
                for target, job_id in chunk:
                    after = job_id or after
                    await queue.put((target, job_id))
                continue
            if handoff.spilled and failure is None:
                try:
                    jobs = await self._queued_jobs(report, after)
                except StorageError as exc:
                    failure, jobs = exc, []
                for job in jobs:
                    after = job.id
                    await self._hand_out(queue, job)
                if jobs:
                    continue
            if closed:
                if failure is not None:
                    raise failure
                return
            await handoff.changed()

    async def _queued_jobs(self, report: BatchReport, after: int) -> list[JobInfo]:
        """The next page of the batch's queued jobs. A database that is away is waited for, up to
        FEED_ATTEMPTS times the repository's own retries: meanwhile the workers finish what they hold
        and the recorder spools. Then the StorageError stands, and the jobs stay queued for --resume."""
        repo, tenant, batch_id = self._repo, self._settings.tenant, report.batch_id
        assert repo is not None
        assert batch_id is not None
        attempt = 1
        while True:
            try:
                return await repo.next_jobs(tenant, batch_id, after_id=after, limit=FEED_CHUNK)
            except StorageError as exc:
                if attempt == FEED_ATTEMPTS:
                    raise
                attempt += 1
                _log.warning("%s; reading the queued jobs again (attempt %d)", exc, attempt)

    async def _feed_leased(self, queue: Work, report: BatchReport, leased: set[int]) -> None:
        """Resume: hand out the jobs in ``leased`` (running under another owner's live lease when the
        batch was reopened) as their leases run out and they are queued again; a job its owner
        finishes meanwhile is left as it is. Without this a resume would end the batch `complete`
        with those jobs still running, never scanned."""
        repo, tenant, batch_id = self._repo, self._settings.tenant, report.batch_id
        assert repo is not None
        assert batch_id is not None
        while leased:
            await asyncio.sleep(LEASE_POLL)
            await repo.requeue_expired(tenant, batch_id)
            running = {job.id async for job in repo.list_jobs(tenant, batch_id=batch_id, status="running")}
            ready, leased = leased - running, leased & running
            after = min(ready, default=0) - 1
            while ready and after < max(ready):
                jobs = await repo.next_jobs(tenant, batch_id, after_id=after, limit=FEED_CHUNK)
                for job in jobs:
                    after = job.id
                    if job.id in ready:
                        await self._hand_out(queue, job)
                if len(jobs) < FEED_CHUNK:
                    break

    @staticmethod
    async def _hand_out(queue: Work, job: JobInfo) -> None:
        try:
            target = normalize(job.input, line=job.line, source=job.source)
        except InvalidDomain:  # valid when stored; normalization is deterministic
            return
        await queue.put((target, job.id))

    async def _admit(
        self, items: Iterable[Target | InvalidInput], queue: Work, recorder: Recorder, report: BatchReport
    ) -> None:
        """Without storage: deduplicate in memory and hand targets straight to the workers."""
        intake = self._intake(items)
        try:
            async for unstored in self._deduplicated(aiter(intake), recorder, report):
                for entry in unstored:
                    await queue.put(entry)
        finally:
            intake.close()

    async def _work(
        self, fetcher: Fetcher, parser: PageParser, queue: Work, recorder: Recorder, report: BatchReport
    ) -> None:
        while (entry := await queue.get()) is not None:
            target, job_id = entry
            recorder.started(job_id)
            try:
                result = await scan_one(fetcher, parser, target, self._settings)
            except asyncio.CancelledError:
                recorder.finished(cancelled_result(target, self._settings.tenant, job_id, report.batch_id))
                return
            result.job_id, result.batch_id = job_id, report.batch_id
            recorder.finished(result)

    def _cancel_queued(self, queue: Work, recorder: Recorder, report: BatchReport) -> None:
        """Handed out but never started: recorded as cancelled (a resume queues them again)."""
        while not queue.empty():
            entry = queue.get_nowait()
            if entry is not None:
                target, job_id = entry
                recorder.finished(cancelled_result(target, self._settings.tenant, job_id, report.batch_id))


def allow_open_files(connections: int) -> None:
    """Raise the soft limit on open files, within the hard one, to leave room for `connections`.

    The usual soft limit is 1024, and every file descriptor past it fails: the lookups and connections
    of every domain after that would be recorded as dns or connect errors, although the sites are fine
    (`--concurrency 1000` may need 4000 sockets). The hard limit is what the administrator
    allows; the soft one is only a default that a process may raise up to it.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows has no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + _FILES_BESIDES_CONNECTIONS
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if raised > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))


def _with_signals(pipeline: Pipeline) -> contextlib.AbstractContextManager[None]:
    """SIGINT/SIGTERM stop the pipeline gracefully; a second signal leaves at once."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if pipeline.stopping:
            pipeline.leave(128 + signum)
        pipeline.stop(signum)

    @contextlib.contextmanager
    def installed() -> Iterator[None]:
        handled = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, on_signal, signum)
                handled.append(signum)
        try:
            yield
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)

    return installed()


async def run_batch(
    settings: Settings,
    items: Iterable[Target | InvalidInput],
    *,
    source: str,
    repo: Repository | None,
    sink: ResultSink,
    parser: PageParser | None = None,
) -> BatchReport:
    """Run a new batch with SIGINT/SIGTERM wired to a graceful stop."""
    pipeline = Pipeline(settings, repo=repo, sink=sink, parser=parser)
    with _with_signals(pipeline):
        return await pipeline.run(items, source=source)


async def resume_batch(
    settings: Settings, batch_id: int, *, repo: Repository, sink: ResultSink
) -> tuple[BatchInfo, BatchReport]:
    """Resume a stored batch with SIGINT/SIGTERM wired to a graceful stop."""
    pipeline = Pipeline(settings, repo=repo, sink=sink)
    with _with_signals(pipeline):
        return await pipeline.resume(batch_id)
