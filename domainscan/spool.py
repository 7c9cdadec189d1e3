"""The spool: results the database would not take, kept as JSON Lines so that nothing is lost.

When a write still fails after the repository's retries, the recorder appends the records to a spool
file instead, prints its path at the end, and the run exits 3. `domainscan import SPOOL` loads it later;
the import is idempotent, so a spool can be loaded twice, or after a partial load, without harm.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from domainscan.errors import InputError
from domainscan.jsontext import dumps


def default_spool_path(tenant: str, batch_id: int | None) -> Path:
    """A new file under the user data directory, named so that a person can tell runs apart."""
    from platformdirs import user_data_path

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{tenant}-batch{batch_id if batch_id is not None else 'none'}-{stamp}-{os.getpid()}.jsonl"
    return user_data_path("domainscan", appauthor=False, ensure_exists=True) / "spool" / name


class Spool:
    """Appends records to one JSON Lines file, created on first use and flushed after every write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file: IO[str] | None = None

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        for record in records:
            self._file.write(dumps(record) + "\n")
            self.count += 1
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_spool(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a spool file, one by one; a line that is not a JSON object stops with its number."""
    try:
        stream = path.open(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read spool {path}: {exc.strerror or exc}") from None
    with stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{path}, line {number}: not a JSON record") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}, line {number}: not a JSON object")
            yield record
