"""Read the domains to scan from arguments, files and stdin, one at a time.

Lists can be huge (millions of lines) and come from anywhere: spreadsheets exported as CSV, files
edited on Windows, pasted text. So every source is streamed line by line with a bounded line length,
bytes are decoded per line (one bad line is one bad record, not a crash), and a file whose first line
is a CSV header naming a ``domain``, ``url`` or ``website`` column is read by that column.

Problems with a *line* become :class:`InvalidInput` values, which the pipeline reports like any other
result; problems with a whole *source* (missing, a directory, unreadable, binary) raise
:class:`InputError`, which the CLI turns into exit code 2. Duplicates are left to the pipeline.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import re
import stat
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from domainscan.domains import normalize
from domainscan.errors import InputError, InvalidDomain
from domainscan.models import InvalidInput, Target

__all__ = ["MAX_LINE_BYTES", "check_sources", "iter_inputs"]

STDIN = "-"
STDIN_SOURCE = "stdin"
ARGS_SOURCE = "args"
MAX_LINE_BYTES = 4096
_BINARY_SNIFF_BYTES = 8192
_SKIP_CHUNK = 64 * 1024
_SHOWN = 80
# Header names of the column holding the domain, in order of preference, and the separators tried.
_COLUMNS = ("domain", "url", "website")
_DELIMITERS = (",", ";", "\t")
_TRAILING_COMMENT = re.compile(r"\s#")

# A line is either its decoded text (without the line ending) or the record that rejects it.
_Line = tuple[int, str] | InvalidInput


class _Rewound:
    """A stream whose first bytes were already read (to sniff for binary data), served again first."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head: io.BytesIO | None = io.BytesIO(head)
        self._rest = rest

    def readline(self, limit: int) -> bytes:
        if self._head is None:
            return self._rest.readline(limit)
        part = self._head.readline(limit)
        if part.endswith(b"\n") or len(part) == limit:
            return part
        self._head = None  # the head is used up; a line crossing its end continues in the stream
        return part + self._rest.readline(limit - len(part))


def _os_error(path: str, exc: OSError) -> InputError:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        why = "no such file"
    elif isinstance(exc, IsADirectoryError):
        why = "is a directory"
    elif isinstance(exc, PermissionError):
        why = "permission denied"
    else:
        why = exc.strerror or str(exc)
    return InputError(f"cannot read {path}: {why}")


def check_sources(files: Sequence[str]) -> None:
    """Raise InputError for the first path that is missing, a directory or unreadable.

    The CLI calls this before scanning so a typo fails at once (exit 2) rather than after hours of
    scanning the files before it. It only looks at metadata: opening a named pipe here would block.
    """
    for path in files:
        if path == STDIN:
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise _os_error(path, exc) from None
        if stat.S_ISDIR(mode):
            raise InputError(f"cannot read {path}: is a directory")
        if not os.access(path, os.R_OK):
            raise InputError(f"cannot read {path}: permission denied")


def _sniff(stream: BinaryIO, source: str) -> _Rewound:
    """Refuse binary data (NUL bytes in the first 8 KiB) before a single line of it becomes a record.

    From a pipe, only what has arrived: its writer may be slow to send 8 KiB, or never send them."""
    read = getattr(stream, "read1", stream.read)
    head = read(_BINARY_SNIFF_BYTES)
    if b"\0" in head:
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise InputError(f"{source} is UTF-16 text; save it as UTF-8")
        raise InputError(f"{source} looks binary, not a list of domains")
    return _Rewound(head, stream)


def _lines(stream: _Rewound, source: str) -> Iterator[_Line]:
    """Yield each physical line, decoded, with its 1-based number; bad lines as InvalidInput.

    At most MAX_LINE_BYTES (plus a CRLF) of a line is held: the rest of a longer line is skipped in
    chunks, so a file with a 1 GB line still streams in constant memory.
    """
    number = 0
    while raw := stream.readline(MAX_LINE_BYTES + 2):
        number += 1
        content = raw.removesuffix(b"\n").removesuffix(b"\r")
        if number == 1:
            content = content.removeprefix(codecs.BOM_UTF8)
        if len(content) > MAX_LINE_BYTES:
            shown = content[:_SHOWN].decode("utf-8", "replace") + "..."
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(_SKIP_CHUNK)
            yield InvalidInput(shown, f"line too long (over {MAX_LINE_BYTES} bytes)", number, source)
            continue
        try:
            yield number, content.decode("utf-8")
        except UnicodeDecodeError:
            yield InvalidInput(content.decode("utf-8", "backslashreplace"), "not UTF-8 text", number, source)


def _check(text: str, line: int, source: str) -> Target | InvalidInput:
    try:
        return normalize(text, line=line, source=source)
    except InvalidDomain as exc:
        return InvalidInput(text, exc.reason, line, source)


def _csv_header(text: str) -> tuple[str, int] | None:
    """Return (delimiter, column index) when `text` is a header naming a domain column, else None.

    A lone ``domain``/``url``/``website`` also counts: a one-column export has no separator to see, and
    the word is never a valid domain itself.
    """
    stripped = text.strip().lower()
    if stripped in _COLUMNS:
        return ",", 0
    for delimiter in _DELIMITERS:
        if delimiter not in text:
            continue
        names = [name.strip().lower() for name in next(csv.reader([text], delimiter=delimiter))]
        for column in _COLUMNS:
            if column in names:
                return delimiter, names.index(column)
    return None


class _CsvFeed:
    """The text lines csv.reader consumes; it sets aside rejected lines and remembers the line number."""

    def __init__(self, lines: Iterator[_Line]) -> None:
        self._lines = lines
        self.line = 0
        self.rejected: list[InvalidInput] = []

    def __iter__(self) -> _CsvFeed:
        return self

    def __next__(self) -> str:
        for item in self._lines:
            if isinstance(item, InvalidInput):
                self.rejected.append(item)
                continue
            self.line, text = item
            return text + "\n"
        raise StopIteration


def _read_csv(
    lines: Iterator[_Line], delimiter: str, column: int, source: str
) -> Iterator[Target | InvalidInput]:
    feed = _CsvFeed(lines)
    reader = csv.reader(feed, delimiter=delimiter)
    try:
        for row in reader:
            yield from feed.rejected
            feed.rejected.clear()
            cell = row[column].strip() if column < len(row) else ""
            if cell:
                yield _check(cell, feed.line, source)
    except csv.Error as exc:
        raise InputError(f"cannot read {source} as CSV: line {feed.line}: {exc}") from None
    yield from feed.rejected


def _read_plain(lines: Iterator[_Line], source: str) -> Iterator[Target | InvalidInput]:
    for item in lines:
        if isinstance(item, InvalidInput):
            yield item
            continue
        number, text = item
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        comment = _TRAILING_COMMENT.search(text)
        if comment:
            text = text[: comment.start()].rstrip()
        yield _check(text, number, source)


def _read_source(stream: BinaryIO, source: str) -> Iterator[Target | InvalidInput]:
    lines = _lines(_sniff(stream, source), source)
    for item in lines:
        if isinstance(item, tuple) and not item[1].strip():
            continue
        # The first non-blank line decides the format.
        header = _csv_header(item[1]) if isinstance(item, tuple) else None
        if header is None:
            yield from _read_plain(_prepend(item, lines), source)
        else:
            yield from _read_csv(lines, *header, source)
        return


def _prepend(first: _Line, rest: Iterator[_Line]) -> Iterator[_Line]:
    yield first
    yield from rest


@contextlib.contextmanager
def _own(stdin: BinaryIO) -> Iterator[BinaryIO]:
    """stdin on a file object of its own, when it has a descriptor.

    The pipeline reads on a thread (domainscan.intake), which may be blocked in a read of a stalled
    pipe when the run ends. Were that read on ``sys.stdin``, the exiting interpreter would wait for the
    stream's lock and abort ("could not acquire lock ... at interpreter shutdown").
    """
    try:
        fd = stdin.fileno()
    except (OSError, ValueError):  # an in-memory stream (io.UnsupportedOperation is both)
        yield stdin
        return
    with open(os.dup(fd), "rb") as stream:
        yield stream


def iter_inputs(
    args: Sequence[str], files: Sequence[str], stdin: BinaryIO
) -> Iterator[Target | InvalidInput]:
    """Yield a Target or an InvalidInput for every input, in order: arguments, then each file.

    ``-`` among `files` reads `stdin`. A file is opened only when reached, and InputError is raised
    then if it cannot be read; call :func:`check_sources` first to fail before any scanning.
    """
    for position, arg in enumerate(args, start=1):
        yield _check(arg, position, ARGS_SOURCE)
    for path in files:
        if path == STDIN:
            try:
                with _own(stdin) as stream:
                    yield from _read_source(stream, STDIN_SOURCE)
            except OSError as exc:
                raise _os_error(STDIN_SOURCE, exc) from None
            continue
        try:
            with open(path, "rb") as stream:
                yield from _read_source(stream, path)
        except OSError as exc:
            raise _os_error(path, exc) from None
