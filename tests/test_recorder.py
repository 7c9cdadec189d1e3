"""The recorder's writes: one operation per flush (outcomes and running marks together), and no
`running` mark a job no longer needs."""

from __future__ import annotations

from typing import Any

from domainscan.config import Settings
from domainscan.models import BatchReport, ScanResult
from domainscan.recorder import Recorder


class SpyRepository:
    """Records the recorder's calls (the repository's own behaviour is tested in test_repository)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

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
        self.calls.append(("finish_jobs", (sorted(r.job_id or 0 for r in results), sorted(running))))
        return len(results)

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
