"""Homepages parsed in worker processes: the same facts as in-process, and a dead worker costs at most
one page, never the batch, and never outlives the process that started it."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import alive

from domainscan import parseworker, parsing
from domainscan.models import Fetched, PageFacts
from domainscan.parsing import PageParser

PAGES = Path(__file__).parent / "fixtures" / "pages"


def fetched(name: str, url: str = "https://www.example.de/") -> Fetched:
    return Fetched(
        url=url,
        http_status=200,
        redirects=(),
        headers={"content-type": "text/html; charset=utf-8"},
        body=(PAGES / f"{name}.html").read_bytes(),
        truncated=False,
        encoding="utf-8",
        elapsed_ms=1,
        is_html=True,
    )


def new_workers_die(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker started from now on is killed as soon as it starts."""
    started = parsing._Worker.__init__

    def dies_at_once(worker: parsing._Worker) -> None:
        started(worker)
        worker.process.kill()
        worker.process.wait()

    monkeypatch.setattr(parsing._Worker, "__init__", dies_at_once)


async def test_workers_give_the_facts_the_main_process_gives() -> None:
    pages = ["contacts", "wordpress", "social", "structured", "shopify", "relative"]
    async with PageParser(0) as inline, PageParser(2) as workers:
        for name in pages:
            here = await inline.facts(fetched(name), host="example.de", phone_region=None)
            there = await workers.facts(fetched(name), host="example.de", phone_region=None)
            assert there == here, name
            assert here != PageFacts(), f"{name}: the fixture page has facts to compare"


async def test_the_phone_region_comes_from_the_scanned_host_unless_given() -> None:
    page = Fetched(
        url="https://example.com/",  # redirected away from the .de site that was scanned
        http_status=200,
        redirects=("https://example.de/",),
        headers={},
        body=b"<html><body><a href='tel:030 1234567'>Call us</a></body></html>",
        truncated=False,
        encoding="utf-8",
        elapsed_ms=1,
        is_html=True,
    )
    async with PageParser(1) as parser:
        assert (await parser.facts(page, host="example.de", phone_region=None)).phones == ["+49301234567"]
        assert (await parser.facts(page, host="example.com", phone_region=None)).phones == []
        assert (await parser.facts(page, host="example.com", phone_region="DE")).phones == ["+49301234567"]


async def test_a_killed_worker_is_replaced_and_the_page_still_parsed() -> None:
    async with PageParser(1) as parser:
        first = await parser.facts(fetched("contacts"), host="example.de", phone_region=None)
        (worker,) = parser.pids
        os.kill(worker, signal.SIGKILL)
        again = await parser.facts(fetched("contacts"), host="example.de", phone_region=None)
        assert again == first
        assert len(parser.pids) == 1
        assert parser.pids != [worker]


async def test_workers_ignore_the_signals_the_terminal_sends_the_whole_group() -> None:
    async with PageParser(1) as parser:
        await parser.facts(fetched("contacts"), host="example.de", phone_region=None)
        (worker,) = parser.pids
        for signum in (signal.SIGINT, signal.SIGTERM):
            os.kill(worker, signum)
        await asyncio.sleep(0.3)
        assert alive(worker)
        assert parser.pids == [worker]
        assert (await parser.facts(fetched("social"), host="example.de", phone_region=None)).social


async def test_a_page_that_kills_the_parser_twice_is_left_without_facts_and_said_so(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with PageParser(1) as parser:
        assert (await parser.facts(fetched("contacts"), host="example.de", phone_region=None)).emails
        new_workers_die(monkeypatch)  # the replacements, as if the page killed them
        os.kill(parser.pids[0], signal.SIGKILL)
        with caplog.at_level(logging.WARNING, logger="domainscan"):
            facts = await parser.facts(fetched("contacts"), host="example.de", phone_region=None)
    assert facts == PageFacts()
    assert "example.de: the page parser crashed twice on this homepage" in caplog.text


async def test_workers_that_cannot_start_leave_parsing_to_the_main_process(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_workers_die(monkeypatch)  # every worker, as if the interpreter could not run it
    async with PageParser(2) as parser:
        with caplog.at_level(logging.WARNING, logger="domainscan"):
            first = await parser.facts(fetched("contacts"), host="example.de", phone_region=None)
            second = await parser.facts(fetched("social"), host="example.de", phone_region=None)
        assert parser.pids == []
    async with PageParser(0) as inline:
        assert first == await inline.facts(fetched("contacts"), host="example.de", phone_region=None)
        assert second == await inline.facts(fetched("social"), host="example.de", phone_region=None)
    assert caplog.text.count("parse workers could not start; parsing in the main process") == 1


def test_workers_exit_when_the_main_process_is_killed(tmp_path: Path) -> None:
    """kill -9 gives the main process no chance to stop its workers: they must notice on their own."""
    script = textwrap.dedent(
        """
        import asyncio, sys, time
        from domainscan.parsing import PageParser

        async def main():
            async with PageParser(2) as parser:
                await asyncio.sleep(0.5)
                print(*parser.pids, flush=True)
                time.sleep(600)

        asyncio.run(main())
        """
    )
    main = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert main.stdout is not None
    workers = [int(pid) for pid in main.stdout.readline().split()]
    assert len(workers) == 2
    assert all(alive(pid) for pid in workers)
    main.kill()
    main.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "parse workers outlived their main process"


def test_a_worker_stopped_before_it_is_ready_exits_without_a_word() -> None:
    """A batch that ends at once (an unreadable input, say) closes the workers' sockets while they are
    still warming up: they leave quietly, since they share the user's stderr."""
    script = textwrap.dedent(
        """
        import asyncio
        from domainscan.parsing import PageParser

        async def main():
            async with PageParser(1):
                pass

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")


def framed(message: bytes) -> bytes:
    return len(message).to_bytes(parseworker.HEADER, "big") + message


def test_the_inbox_hands_out_messages_in_order_however_they_were_cut() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        inbox = parseworker._Inbox(theirs, limit=1 << 20)
        stream = b"".join(framed(bytes([n]) * (1000 * n)) for n in range(1, 6))
        for start in range(0, len(stream), 777):  # frames cut across writes
            ours.sendall(stream[start : start + 777])
        assert [inbox.get() for _ in range(5)] == [bytes([n]) * (1000 * n) for n in range(1, 6)]
        ours.close()
        assert inbox.get() is None


def test_the_inbox_reads_ahead_no_further_than_its_limit() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        inbox = parseworker._Inbox(theirs, limit=1500)
        for n in range(1, 5):
            ours.sendall(framed(bytes([n]) * 1000))
        deadline = time.monotonic() + 5
        while inbox._held < 2000 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # time enough to read more, were it allowed to
        assert inbox._held == 2000, "two messages reach the limit: the reading stops there"
        assert inbox.get() == bytes([1]) * 1000
        while inbox._held < 2000 and time.monotonic() < deadline:  # room again: one more is read
            time.sleep(0.01)
        assert inbox._held == 2000
        assert [inbox.get() for _ in range(3)] == [bytes([n]) * 1000 for n in (2, 3, 4)]


def test_the_inbox_drops_what_it_holds_once_the_main_process_closes() -> None:
    """The main process closing the socket wants no more answers: parsing what is left would only
    keep the worker (and the scan's exit) waiting."""
    ours, theirs = socket.socketpair()
    with theirs:
        inbox = parseworker._Inbox(theirs, limit=1 << 20)
        for n in range(1, 4):
            ours.sendall(framed(bytes([n]) * 1000))
        deadline = time.monotonic() + 5
        while inbox._held < 3000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert inbox._held == 3000
        ours.close()
        while not inbox._closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert inbox.get() is None


@pytest.mark.parametrize(
    ("module", "has_event_loop"),
    [("domainscan.parseworker", False), ("domainscan.parsing", True)],
    ids=["worker", "control-main-side"],
)
def test_a_worker_parses_without_importing_the_event_loop(module: str, has_event_loop: bool) -> None:
    """Every worker would pay about 6 MB for asyncio (and the ssl it brings) without using it. The
    control imports the main process's side, which has the event loop, and the probe sees it."""
    script = textwrap.dedent(
        f"""
        import sys
        import {module}
        from domainscan.parseworker import _warm_up, page_facts
        _warm_up()
        body = open({str(PAGES / "contacts.html")!r}, "rb").read()
        assert page_facts(body, "https://example.de/", {{}}, None, None, "example.de").emails
        print(" ".join(sorted({{name.split(".")[0] for name in sys.modules}})))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    assert "lxml" in loaded, "the probe parsed a page"
    assert ("asyncio" in loaded) is has_event_loop
