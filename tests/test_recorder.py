"""The recorder's writes: one operation per flush (outcomes and running marks together), and no
`running` mark a job no longer needs."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import pytest

from domainscan import recorder as recorder_module
from domainscan.config import Settings
from domainscan.models import BatchReport, ScanResult
from domainscan.recorder import Recorder


class SpyRepository:
    """Records the recorder's calls (the repository's own behaviour is tested in test_repository)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.release = asyncio.Event()  # finish_jobs is in flight until it is set
        self.release.set()

    async def mark_running(self, tenant: str, job_ids: list[int], *, lease_seconds: float) -> None:
        self.calls.append(("mark_running", sorted(job_ids)))

    async def finish_jobs(
        self,
        tenant: str,
        batch_id: int,
        results: list[ScanResult],
        *,
        running: list[int],
        lease_seconds: float,
    ) -> int:
        await self.release.wait()
        self.calls.append(("finish_jobs", (sorted(r.job_id or 0 for r in results), sorted(running))))
        return len(results)


def held() -> SpyRepository:
    """A repository whose writes stay in flight (committed or not) until the test sets `release`."""
    repo = SpyRepository()
    repo.release.clear()
    return repo

    async def heartbeat(self, tenant: str, batch_id: int, *, lease_seconds: float) -> None:
        self.calls.append(("heartbeat", batch_id))


def result(job_id: int) -> ScanResult:
    return ScanResult(
        domain=f"d{job_id}.example",
        input=f"d{job_id}.example",
        tenant="default",
        scanned_at="",
        job_id=job_id,
    )


async def test_a_job_that_finished_before_the_flush_is_written_once_without_a_running_mark() -> None:
    repo, emitted = SpyRepository(), list[ScanResult]()
    recorder = Recorder(repo, Settings(), BatchReport(batch_id=7), emitted.append)  # type: ignore[arg-type]
    for job_id in (1, 2, 3):
        recorder.started(job_id)
    recorder.finished(result(2))
    await recorder.flush()
    assert repo.calls == [("finish_jobs", ([2], [1, 3]))]  # one operation per flush, with the marks
    recorder.finished(result(1))
    recorder.started(4)
    recorder.finished(result(4))
    await recorder.flush()
    assert repo.calls[1:] == [("finish_jobs", ([1, 4], []))]
    recorder.started(5)
    await recorder.flush()
    assert repo.calls[2:] == [("mark_running", [5])]
    assert [r.job_id for r in emitted] == [2, 1, 4]


class Left(Exception):
    """Stands in for os._exit in these tests: the process left, with this status."""


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    statuses: list[int] = []

    def leave(status: int) -> NoReturn:
        statuses.append(status)
        raise Left(status)

    monkeypatch.setattr(recorder_module, "exit_now", leave)
    return statuses


@pytest.mark.parametrize("in_flight", [True, False], ids=["write-in-flight", "control-idle"])
async def test_leaving_at_once_waits_for_the_records_of_a_write_in_flight(
    exits: list[int], in_flight: bool
) -> None:
    """A second Ctrl-C while a write is in flight: the write may already be committed, so its records
    are printed before the process leaves (a resume would not print them). With nothing in flight
    (the control) it leaves at once."""
    repo, emitted = held(), list[ScanResult]()
    recorder = Recorder(repo, Settings(), BatchReport(batch_id=7), emitted.append)  # type: ignore[arg-type]
    recorder.finished(result(1))
    recorder.finished(result(2))
    flushing = asyncio.create_task(recorder.flush()) if in_flight else None
    await asyncio.sleep(0)  # the write has started
    if flushing is None:
        with pytest.raises(Left):
            recorder.leave(130)
        assert (exits, emitted) == ([130], [])
        return
    recorder.leave(130)
    assert exits == []  # not while the write is in flight
    repo.release.set()
    with pytest.raises(Left):
        await flushing
    assert exits == [130]
    assert [r.job_id for r in emitted] == [1, 2]  # out before leaving


async def test_a_write_that_never_ends_delays_leaving_by_at_most_leave_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    statuses: list[int] = []
    monkeypatch.setattr(recorder_module, "exit_now", statuses.append)  # from a timer: nothing to raise to
    monkeypatch.setattr(recorder_module, "LEAVE_WAIT", 0.05)
    repo = held()
    recorder = Recorder(repo, Settings(), BatchReport(batch_id=7), lambda r: None)  # type: ignore[arg-type]
    recorder.finished(result(1))
    flushing = asyncio.create_task(recorder.flush())
    await asyncio.sleep(0)
    recorder.leave(143)
    assert statuses == []
    await asyncio.sleep(0.2)
    assert statuses == [143]
    flushing.cancel()
