"""Everything the user sees: record writers (jsonl, json, csv, table), the progress bar and the summary.

Writers stream: jsonl, json and csv write each record as it arrives, so a batch of millions never
gathers in memory. Only the table, which is for a person at a terminal, keeps rows until the end
(and at most TABLE_ROWS of them). Rich is imported only when a table or a progress bar is drawn.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol

from domainscan.config import OutputFormat
from domainscan.jsontext import dumps

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from domainscan.models import BatchReport

TABLE_ROWS = 1000


@dataclass
class Environment:
    """The streams a run talks to; tests pass their own to drive the program in-process."""

    stdin: BinaryIO = field(default_factory=lambda: sys.stdin.buffer)
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)

    @property
    def stdout_isatty(self) -> bool:
        return _isatty(self.stdout)

    @property
    def stderr_isatty(self) -> bool:
        return _isatty(self.stderr)

    def error(self, message: str) -> None:
        """One line on stderr: what went wrong, and what to do when that is known."""
        print(f"domainscan: {message}", file=self.stderr, flush=True)

    def console(self, *, stderr: bool = False) -> Console:
        from rich.console import Console

        return Console(file=self.stderr if stderr else self.stdout, soft_wrap=False)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def resolve_format(fmt: OutputFormat | None, env: Environment) -> OutputFormat:
    """Table for a person at a terminal, JSON Lines for a pipe or a file."""
    if fmt is not None:
        return fmt
    return OutputFormat.TABLE if env.stdout_isatty else OutputFormat.JSONL


class RecordWriter(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class JsonlWriter:
    """One line per record, flushed at once: a record the database holds is on the output even when the
    process is killed (kill -9) a moment later, so the outputs of a killed run and its resume add up."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def write(self, record: dict[str, Any]) -> None:
        self._out.write(dumps(record) + "\n")
        self._out.flush()

    def close(self) -> None:
        self._out.flush()


class JsonArrayWriter:
    """A JSON array written element by element (valid JSON even when empty)."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        self._count = 0

    def write(self, record: dict[str, Any]) -> None:
        self._out.write(("[\n" if self._count == 0 else ",\n") + dumps(record))
        self._count += 1

    def close(self) -> None:
        self._out.write("[]\n" if self._count == 0 else "\n]\n")
        self._out.flush()


def csv_cell(value: Any) -> Any:
    """Lists of strings become `a; b`; other nested values JSON; None an empty cell."""
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "; ".join(value)
    if isinstance(value, dict | list):
        return dumps(value)
    return value


class CsvWriter:
    def __init__(self, out: IO[str], columns: Sequence[str]) -> None:
        self._out = out
        self._writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
        self._writer.writeheader()

    def write(self, record: dict[str, Any]) -> None:
        self._writer.writerow({k: csv_cell(v) for k, v in record.items()})

    def close(self) -> None:
        self._out.flush()


# Columns of the scan table; each is (header, how to show it from a record).
SCAN_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("domain", lambda r: str(r.get("domain") or r.get("input") or "")),
    ("status", lambda r: str(r["status"]) if r["status"] == "ok" else f"{r['error_kind']}"),
    ("http", lambda r: "" if r.get("http_status") is None else str(r["http_status"])),
    ("title", lambda r: _clip(r.get("title") or r.get("error") or "", 50)),
    ("tech", lambda r: _clip(", ".join(t["name"] for t in r.get("tech") or []), 40)),
    ("emails", lambda r: _clip(", ".join(r.get("emails") or []), 40)),
    ("phones", lambda r: ", ".join(r.get("phones") or [])),
    ("social", lambda r: ", ".join(sorted(r.get("social") or {}))),
)


# Added to the scan table when the records have sitemap fields.
SITEMAP_COLUMNS: tuple[tuple[str, Callable[[dict[str, Any]], str]], ...] = (
    ("sitemaps", lambda r: str(len(r.get("sitemaps") or []))),
    ("urls", lambda r: "" if r.get("sitemap_url_count") is None else str(r["sitemap_url_count"])),
)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class TableWriter:
    """Rows kept until close; one record is shown as a detail sheet, several as a table."""

    def __init__(self, env: Environment, columns: Sequence[str] | None = None) -> None:
        self._env = env
        self._columns = columns
        self._rows: list[dict[str, Any]] = []
        self._dropped = 0

    def write(self, record: dict[str, Any]) -> None:
        if len(self._rows) < TABLE_ROWS:
            self._rows.append(record)
        else:
            self._dropped += 1

    def close(self) -> None:
        from rich.table import Table

        console = self._env.console()
        if not self._rows:
            console.print("(nothing to show)")
            return
        if len(self._rows) == 1 and self._columns is None:
            table = Table(show_header=False, box=None, pad_edge=False)
            table.add_column(style="bold")
            table.add_column(overflow="fold")
            for key, value in self._rows[0].items():
                table.add_row(key, _sheet_value(value))
        else:
            table = Table(show_lines=False)
            if self._columns is None:
                columns = SCAN_COLUMNS
                if any("sitemaps" in row for row in self._rows):
                    columns += SITEMAP_COLUMNS
                for header, _ in columns:
                    table.add_column(header, overflow="fold")
                for row in self._rows:
                    table.add_row(*(show(row) for _, show in columns))
            else:
                for column in self._columns:
                    table.add_column(column, overflow="fold")
                for row in self._rows:
                    table.add_row(*(_sheet_value(row.get(c)) for c in self._columns))
        console.print(table)
        if self._dropped:
            console.print(f"… and {self._dropped} more rows; use --format jsonl or csv for everything")


def _sheet_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(
            t["name"] + (f" {t['version']}" if t.get("version") else "")
            if isinstance(t, dict) and "name" in t
            else str(t)
            for t in value
        )
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def make_writer(fmt: OutputFormat, env: Environment, *, columns: Sequence[str] | None = None) -> RecordWriter:
    """A writer for `fmt`; `columns` names the fields of read-command rows (None: scan records)."""
    if fmt is OutputFormat.JSONL:
        return JsonlWriter(env.stdout)
    if fmt is OutputFormat.JSON:
        return JsonArrayWriter(env.stdout)
    if fmt is OutputFormat.CSV:
        # Scan records: the sitemap columns are always there (empty when sitemaps were not scanned), so
        # a CSV has the same header whatever the batch (a --resume does not know its options up front).
        from domainscan.models import RECORD_FIELDS, SITEMAP_FIELDS

        return CsvWriter(env.stdout, columns or (*RECORD_FIELDS, *SITEMAP_FIELDS))
    return TableWriter(env, columns)


def write_all(writer: RecordWriter, records: Iterable[dict[str, Any]]) -> None:
    for record in records:
        writer.write(record)
    writer.close()


class BatchProgress:
    """A progress line on stderr while a batch runs, when stderr is a terminal and not --quiet."""

    def __init__(self, env: Environment, *, enabled: bool) -> None:
        self._progress: Progress | None = None
        self._task: Any = None
        self._ok = self._failed = 0
        if enabled and env.stderr_isatty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("scanning"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=env.console(stderr=True),
                transient=True,
            )
            self._task = self._progress.add_task("scan", total=None, detail="")

    def __enter__(self) -> BatchProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, ok: bool) -> None:
        if self._progress is None:
            return
        if ok:
            self._ok += 1
        else:
            self._failed += 1
        self._progress.update(self._task, advance=1, detail=f"{self._ok} ok, {self._failed} failed")


def summary_line(report: BatchReport) -> str:
    """One line: counts, elapsed time, rate, and where the batch is stored."""
    parts = [f"{report.ok} ok", f"{report.failed} failed", f"{report.invalid} invalid"]
    if report.cancelled:
        parts.append(f"{report.cancelled} cancelled")
    if report.duplicates:
        parts.append(f"{report.duplicates} duplicates skipped")
    where = f"batch {report.batch_id} {report.status}" if report.batch_id is not None else report.status
    return (
        f"{report.total} domains in {report.elapsed_s:.1f}s ({report.rate:.1f}/s): "
        f"{', '.join(parts)} · {where}"
    )
