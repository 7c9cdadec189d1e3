"""The pipeline's promises: bounded concurrency, one record per admitted input, duplicates once,
failures recorded, and everything stored through the repository in short operations."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from domainscan import pipeline as pipeline_module
from domainscan.config import Settings
from domainscan.errors import ErrorKind, FetchError, StorageError
from domainscan.models import Fetched, InvalidInput, JobInfo, ScanResult, Target
from domainscan.pipeline import BatchReport, Pipeline
from domainscan.spool import read_spool

if TYPE_CHECKING:
    from domainscan.db import Repository

_T = TypeVar("_T")

PAGE = (
    b"<html lang='en'><head><title>Hello</title></head>"
    b"<body><a href='mailto:info@example.com'>mail</a></body></html>"
)


def target(domain: str, line: int | None = None) -> Target:
    return Target(domain=domain, host=domain, port=None, input=domain, line=line)


class FakeFetcher:
    """Stands in for fetch.Fetcher: counts how many fetches are in flight at once."""

    def __init__(
        self,
        delay: float = 0.01,
        fail: dict[str, FetchError] | None = None,
        status: dict[str, int] | None = None,
    ) -> None:
        self.delay = delay
        self.fail = fail or {}
        self.status = status or {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.fetched: list[str] = []

    async def __aenter__(self) -> FakeFetcher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def site(self) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext()

    async def fetch(self, t: Target, *, deadline: object = None) -> Fetched:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            self.fetched.append(t.domain)
            if t.domain in self.fail:
                raise self.fail[t.domain]
            return Fetched(
                url=f"https://{t.domain}/",
                http_status=self.status.get(t.domain, 200),
                redirects=(),
                headers={"content-type": "text/html", "server": "nginx"},
                body=PAGE,
                truncated=False,
                encoding="utf-8",
                elapsed_ms=1,
                is_html=True,
            )
        finally:
            self.in_flight -= 1


async def run(
    items: list[Target | InvalidInput], fetcher: FakeFetcher, *, concurrency: int = 5
) -> tuple[list[ScanResult], BatchReport]:
    results: list[ScanResult] = []
    settings = Settings(concurrency=concurrency, timeout=5)
    pipeline = Pipeline(settings, repo=None, sink=results.append, fetcher=fetcher)  # type: ignore[arg-type]
    report = await pipeline.run(items, source="test")
    return results, report


async def test_concurrency_is_bounded_and_every_input_reported() -> None:
    fetcher = FakeFetcher(delay=0.02)
    domains = [f"site{i}.example" for i in range(60)]
    results, report = await run([target(d) for d in domains], fetcher, concurrency=7)
    assert fetcher.max_in_flight == 7
    assert sorted(r.domain or "" for r in results) == sorted(domains)
    assert all(r.ok and r.facts.title == "Hello" for r in results)
    assert report.total == 60
    assert report.ok == 60


async def test_slow_site_does_not_hold_the_others() -> None:
    class OneSlow(FakeFetcher):
        async def fetch(self, t: Target, *, deadline: object = None) -> Fetched:
            if t.domain == "slow.example":
                await asyncio.sleep(1.0)
            return await super().fetch(t)

    order: list[str] = []
    fetcher = OneSlow(delay=0.001)
    settings = Settings(concurrency=3, timeout=5)
    items = [target("slow.example")] + [target(f"fast{i}.example") for i in range(30)]
    pipeline = Pipeline(settings, repo=None, sink=lambda r: order.append(r.domain or ""), fetcher=fetcher)  # type: ignore[arg-type]
    await pipeline.run(items, source="test")
    assert order[-1] == "slow.example"
    assert len(order) == 31


async def test_duplicates_scanned_once_and_invalid_lines_recorded() -> None:
    fetcher = FakeFetcher()
    items: list[Target | InvalidInput] = [
        target("a.example", 1),
        target("b.example", 2),
        target("a.example", 3),
        InvalidInput(input="not a domain", reason="bad label", line=4),
    ]
    results, report = await run(items, fetcher)
    assert sorted(fetcher.fetched) == ["a.example", "b.example"]
    invalid = [r for r in results if r.error_kind is ErrorKind.INVALID_DOMAIN]
    assert len(invalid) == 1
    assert invalid[0].error == "line 4: bad label"
    assert invalid[0].to_record()["status"] == "error"
    assert (report.duplicates, report.invalid, report.ok, report.total) == (1, 1, 2, 3)


async def test_failures_become_error_records_not_exceptions() -> None:
    fetcher = FakeFetcher(
        fail={"dead.example": FetchError(ErrorKind.DNS, "dns: no address for dead.example")},
        status={"broken.example": 503},
    )
    items: list[Target | InvalidInput] = [
        target("dead.example"),
        target("broken.example"),
        target("fine.example"),
    ]
    results, report = await run(items, fetcher)
    by_domain = {r.domain: r.to_record() for r in results}
    assert by_domain["dead.example"]["error_kind"] == "dns"
    assert by_domain["dead.example"]["error"] == "dns: no address for dead.example"
    assert by_domain["broken.example"]["error_kind"] == "http_status"
    assert by_domain["broken.example"]["http_status"] == 503
    assert by_domain["fine.example"]["status"] == "ok"
    assert (report.ok, report.failed) == (1, 2)


async def test_stop_cancels_in_flight_and_records_them() -> None:
    fetcher = FakeFetcher(delay=30)
    results: list[ScanResult] = []
    settings = Settings(concurrency=4, timeout=60)
    pipeline = Pipeline(settings, repo=None, sink=results.append, fetcher=fetcher)  # type: ignore[arg-type]
    items = [target(f"s{i}.example") for i in range(10)]
    task = asyncio.create_task(pipeline.run(items, source="test"))
    await asyncio.sleep(0.2)
    pipeline.stop(signal.SIGINT)
    report = await asyncio.wait_for(task, 3)
    assert report.status == "interrupted"
    assert report.signal == signal.SIGINT
    assert {r.error_kind for r in results} == {ErrorKind.CANCELLED}
    assert report.cancelled == len(results) >= 4


async def test_results_are_stored_before_they_are_emitted(tmp_path: Path) -> None:
    from domainscan.db import open_repository

    repo = await open_repository(f"sqlite:///{tmp_path}/p.db", auto_upgrade=True)
    try:
        seen_in_db: list[str | None] = []
        settings = Settings(concurrency=3, timeout=5)
        results: list[ScanResult] = []
        pipeline = Pipeline(settings, repo=repo, sink=results.append, fetcher=FakeFetcher())  # type: ignore[arg-type]
        items: list[Target | InvalidInput] = [target(f"s{i}.example") for i in range(25)]
        items += [target("s1.example"), InvalidInput(input="#bad", reason="bad", line=99)]
        report = await pipeline.run(items, source="test")
        assert report.batch_id is not None
        for r in results:
            assert r.job_id is not None
            assert r.batch_id == report.batch_id
            info = await repo.get_domain("default", r.domain) if r.domain else None
            seen_in_db.append(info.status if info else None)
        assert seen_in_db.count("ok") == 25
        batch = await repo.get_batch("default", report.batch_id)
        assert batch is not None
        assert (batch.status, batch.total, batch.ok, batch.failed, batch.invalid, batch.duplicates) == (
            "complete",
            26,
            25,
            0,
            1,
            1,
        )
        counts = await repo.job_counts("default", report.batch_id)
        assert counts == {"succeeded": 25, "failed": 1}
    finally:
        await repo.close()


async def test_an_unreadable_input_finishes_what_was_admitted_then_fails_the_batch() -> None:
    from domainscan.errors import InputError

    def items() -> Iterator[Target | InvalidInput]:
        yield target("a.example")
        yield target("b.example")
        raise InputError("bad.bin looks binary, not a list of domains")

    results: list[ScanResult] = []
    pipeline = Pipeline(
        Settings(concurrency=2, timeout=5), repo=None, sink=results.append, fetcher=FakeFetcher()
    )  # type: ignore[arg-type]
    with pytest.raises(InputError, match="looks binary"):
        await asyncio.wait_for(pipeline.run(items(), source="test"), 5)
    assert sorted(r.domain or "" for r in results) == ["a.example", "b.example"]
    assert all(r.ok for r in results)


async def test_a_bug_in_a_worker_stops_the_batch_loudly() -> None:
    class Buggy(FakeFetcher):
        async def fetch(self, t: Target, *, deadline: object = None) -> Fetched:
            if t.domain == "bug.example":
                raise RuntimeError("boom")
            return await super().fetch(t)

    pipeline = Pipeline(
        Settings(concurrency=2, timeout=5), repo=None, sink=lambda r: None, fetcher=Buggy(delay=0.05)
    )  # type: ignore[arg-type]
    items = [target(f"s{i}.example") for i in range(20)] + [target("bug.example")]
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(pipeline.run(items, source="test"), 5)


async def test_resume_scans_only_what_has_no_outcome(tmp_path: Path) -> None:
    from domainscan.db import open_repository

    repo = await open_repository(f"sqlite:///{tmp_path}/r.db", auto_upgrade=True)
    try:
        settings = Settings(concurrency=2, timeout=30)
        first: list[ScanResult] = []
        four_done = asyncio.Event()

        def sink(result: ScanResult) -> None:
            first.append(result)
            if len(first) >= 4:
                four_done.set()

        slow = FakeFetcher(delay=0.3)
        pipeline = Pipeline(settings, repo=repo, sink=sink, fetcher=slow)  # type: ignore[arg-type]
        domains = [f"s{i}.example" for i in range(12)]
        task = asyncio.create_task(pipeline.run([target(d) for d in domains], source="test"))
        await asyncio.wait_for(four_done.wait(), 10)
        pipeline.stop(signal.SIGTERM)
        report = await task
        assert report.status == "interrupted"
        assert report.batch_id is not None
        batch = await repo.get_batch("default", report.batch_id)
        assert batch is not None
        assert batch.status == "interrupted"
        assert batch.total == 12  # every input was stored before it was scanned
        done_before = {r.domain for r in first if r.ok}

        second: list[ScanResult] = []
        again = FakeFetcher(delay=0.01)
        resumed = Pipeline(settings, repo=repo, sink=second.append, fetcher=again)  # type: ignore[arg-type]
        info, report2 = await resumed.resume(report.batch_id)
        assert info.status == "running"
        assert report2.status == "complete"
        assert done_before.isdisjoint(again.fetched)  # nothing scanned twice
        assert done_before | set(again.fetched) == set(domains)
        assert await repo.job_counts("default", report.batch_id) == {"succeeded": 12}
        info3, report3 = await Pipeline(settings, repo=repo, sink=second.append, fetcher=again).resume(  # type: ignore[arg-type]
            report.batch_id
        )
        assert info3.status == "complete"
        assert report3.total == 0
    finally:
        await repo.close()


@contextlib.asynccontextmanager
async def sqlite_repository(tmp_path: Path) -> AsyncIterator[Repository]:
    from domainscan.db import open_repository

    repo = await open_repository(f"sqlite:///{tmp_path}/h.db", auto_upgrade=True)
    try:
        yield repo
    finally:
        await repo.close()


def failing_after(
    calls: int, real: Callable[..., Awaitable[_T]], failures: int = 10**9
) -> Callable[..., Awaitable[_T]]:
    """`real`, except that from call number `calls` + 1 on it raises StorageError, `failures` times."""
    made = [0]

    async def call(*args: Any, **kwargs: Any) -> _T:
        made[0] += 1
        if calls < made[0] <= calls + failures:
            raise StorageError("storage unavailable: the database went away (a test)")
        return await real(*args, **kwargs)

    return call


@pytest.mark.parametrize("handoff_limit", [pipeline_module.HANDOFF_LIMIT, 7, 0])
async def test_the_feeder_takes_the_registrars_jobs_and_reads_back_only_what_did_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handoff_limit: int
) -> None:
    """Every stored job is scanned once, whether the registrar handed it over or the feeder read it
    back; the database is read only for what the handoff could not hold."""
    monkeypatch.setattr(pipeline_module, "HANDOFF_LIMIT", handoff_limit)
    async with sqlite_repository(tmp_path) as repo:
        reads = [0]
        next_jobs = repo.next_jobs

        async def counted(*args: Any, **kwargs: Any) -> list[JobInfo]:
            reads[0] += 1
            return await next_jobs(*args, **kwargs)

        monkeypatch.setattr(repo, "next_jobs", counted)
        fetcher = FakeFetcher()
        results: list[ScanResult] = []
        pipeline = Pipeline(
            Settings(concurrency=3, timeout=5), repo=repo, sink=results.append, fetcher=fetcher
        )  # type: ignore[arg-type]
        report = await pipeline.run([target(f"s{i}.example") for i in range(60)], source="test")
        assert sorted(fetcher.fetched) == sorted(f"s{i}.example" for i in range(60))
        assert report.status == "complete"
        assert report.batch_id is not None
        assert await repo.job_counts("default", report.batch_id) == {"succeeded": 60}
        assert all(r.job_id is not None for r in results)
        assert (reads[0] == 0) == (handoff_limit >= 60)


@pytest.mark.parametrize("handoff_limit", [pipeline_module.HANDOFF_LIMIT, 4])
async def test_inputs_the_database_would_not_take_are_scanned_printed_and_spooled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, handoff_limit: int
) -> None:
    """Registration fails for good after two chunks: the batch goes on, the rest is scanned without a
    job, every input is printed once, the unstored ones are spooled, and the import stores them. (A
    small handoff makes the registrar wait for room, for what is nowhere else.)"""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(pipeline_module, "HANDOFF_LIMIT", handoff_limit)
    async with sqlite_repository(tmp_path) as repo:
        monkeypatch.setattr(repo, "add_jobs", failing_after(2, repo.add_jobs))
        items: list[Target | InvalidInput] = [target(f"s{i}.example", i) for i in range(40)]
        items += [target("s30.example", 40), InvalidInput(input="#bad", reason="bad", line=41)]
        results: list[ScanResult] = []
        fetcher = FakeFetcher()
        pipeline = Pipeline(
            Settings(concurrency=5, timeout=5), repo=repo, sink=results.append, fetcher=fetcher
        )  # type: ignore[arg-type]
        report = await asyncio.wait_for(pipeline.run(items, source="test"), 10)
        assert sorted(fetcher.fetched) == sorted(f"s{i}.example" for i in range(40))
        assert sorted(r.input for r in results) == sorted([f"s{i}.example" for i in range(40)] + ["#bad"])
        assert str(report.storage_error) == "storage unavailable: the database went away (a test)"
        assert (report.total, report.ok, report.invalid, report.duplicates) == (41, 40, 1, 1)
        stored = [r for r in results if r.job_id is not None]
        assert len(stored) == 15  # the chunks of 5 and 10 that were registered
        assert all(r.batch_id == report.batch_id for r in results)
        assert report.spool_path is not None
        spooled = list(read_spool(Path(report.spool_path)))
        assert report.spooled == len(spooled) == 26
        assert sorted(r["input"] for r in spooled) == sorted(r.input for r in results if r.job_id is None)
        assert report.batch_id is not None
        assert await repo.job_counts("default", report.batch_id) == {"succeeded": 15}

        counts = await repo.import_records("default", spooled)
        assert (counts.imported, counts.already_stored, counts.skipped) == (26, 0, 0)
        assert await repo.job_counts("default", report.batch_id) == {"succeeded": 40, "failed": 1}


@pytest.mark.parametrize(
    ("failures", "survives"), [(pipeline_module.FEED_ATTEMPTS - 1, True), (10**9, False)]
)
async def test_the_feeder_waits_out_a_database_that_is_away(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failures: int, survives: bool
) -> None:
    """Reading queued jobs back fails: the feeder tries again, FEED_ATTEMPTS times in all; a database
    that stays away ends the run with a storage error and the unscanned jobs still queued (control)."""
    monkeypatch.setattr(pipeline_module, "HANDOFF_LIMIT", 0)
    async with sqlite_repository(tmp_path) as repo:
        monkeypatch.setattr(repo, "next_jobs", failing_after(2, repo.next_jobs, failures))
        fetcher = FakeFetcher()
        pipeline = Pipeline(
            Settings(concurrency=2, timeout=5), repo=repo, sink=lambda r: None, fetcher=fetcher
        )  # type: ignore[arg-type]
        report = await asyncio.wait_for(
            pipeline.run([target(f"s{i}.example") for i in range(30)], source="t"), 10
        )
        assert report.batch_id is not None
        counts = await repo.job_counts("default", report.batch_id)
        if survives:
            assert report.storage_error is None
            assert report.status == "complete"
            assert counts == {"succeeded": 30}
        else:
            assert isinstance(report.storage_error, StorageError)
            assert report.status == "interrupted"
            assert counts["queued"] == sum(counts.values()) - len(fetcher.fetched) > 0


async def test_a_database_gone_for_good_loses_no_input_it_could_not_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Everything spilled (the feeder reads every job back), registration fails after two chunks, and
    reading back never works again: the registered jobs stay queued for --resume, and every input the
    registrar read after that is still scanned, printed and spooled, before the storage error stands."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setattr(pipeline_module, "HANDOFF_LIMIT", 0)
    async with sqlite_repository(tmp_path) as repo:
        monkeypatch.setattr(repo, "add_jobs", failing_after(2, repo.add_jobs))
        monkeypatch.setattr(repo, "next_jobs", failing_after(0, repo.next_jobs))
        results: list[ScanResult] = []
        fetcher = FakeFetcher()
        pipeline = Pipeline(
            Settings(concurrency=5, timeout=5), repo=repo, sink=results.append, fetcher=fetcher
        )  # type: ignore[arg-type]
        domains = [f"s{i}.example" for i in range(40)]
        report = await asyncio.wait_for(pipeline.run([target(d) for d in domains], source="test"), 10)
        assert isinstance(report.storage_error, StorageError)
        assert report.status == "interrupted"
        assert report.batch_id is not None
        queued = [job.domain async for job in repo.list_jobs("default", batch_id=report.batch_id)]
        assert len(queued) == 15  # the two chunks registered: 5, then 10
        assert sorted(queued + [r.domain for r in results]) == sorted(domains)
        assert all(r.job_id is None for r in results)
        assert report.spooled == len(results) == 25
