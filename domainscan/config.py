"""Settings: one frozen value built from options, DOMAINSCAN_* environment variables and `.env`.

The CLI reads options and environment (Typer's `envvar`), after `.env` has been loaded into the
environment without overriding what is already set. Everything below the CLI takes a Settings and
never looks at the environment itself, so tests can build one directly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from domainscan import __version__
from domainscan.errors import UsageError
from domainscan.netpolicy import AddressPolicy

PROJECT_URL = "https://github.com/domainscan/domainscan"
DEFAULT_USER_AGENT = f"domainscan/{__version__} (+{PROJECT_URL})"
DEFAULT_TENANT = "default"
DEFAULT_CONCURRENCY = 50
# A batch's registrar, feeder and recorder each use one connection at a time; kept open between their
# operations, they save PostgreSQL a backend start each (half its CPU for a 2000-domain batch).
DEFAULT_DB_POOL_SIZE = 3
DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
MAX_DEFAULT_PARSE_WORKERS = 4  # beyond this the event loop, not parsing, is what limits a batch

_TENANT = re.compile(r"[A-Za-z0-9._-]{1,64}")


class OutputFormat(StrEnum):
    TABLE = "table"
    JSONL = "jsonl"
    JSON = "json"
    CSV = "csv"


class FailOn(StrEnum):
    ERROR = "error"
    NEVER = "never"


def validate_tenant(tenant: str) -> str:
    """Tenants are 1-64 letters, digits, '-', '_' or '.': safe in logs, file names and SQL parameters."""
    if not _TENANT.fullmatch(tenant):
        raise UsageError(f"invalid tenant {tenant[:80]!r}: use 1-64 letters, digits, '-', '_' or '.'")
    return tenant


def default_database_url() -> str:
    """The embedded default: a SQLite file in the user data directory (created on first use)."""
    from platformdirs import user_data_path

    path: Path = user_data_path("domainscan", appauthor=False, ensure_exists=True) / "domainscan.db"
    return f"sqlite:///{path}"


def default_parse_workers() -> int:
    """One parse worker per core this process may use, minus the event loop's own; 0 on one core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(MAX_DEFAULT_PARSE_WORKERS, cores - 1))


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a run needs to know; built once by the CLI (or a test) and passed down."""

    tenant: str = DEFAULT_TENANT
    database_url: str | None = None  # None: the embedded SQLite default
    store: bool = True
    db_pool_size: int = DEFAULT_DB_POOL_SIZE  # 0: a new connection per operation (NullPool)
    concurrency: int = DEFAULT_CONCURRENCY
    parse_workers: int = 0  # processes that parse homepages (domainscan.parsing); 0: in the loop's process
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES
    user_agent: str = DEFAULT_USER_AGENT
    phone_region: str | None = None
    retries: int = 1
    homepage: bool = True  # fetch and read each homepage (off for `domainscan sitemaps`)
    sitemaps: bool = False  # also scan robots.txt and sitemaps (--sitemaps)
    store_urls: int = 0  # page URLs from sitemaps stored per domain (--store-urls); 0: none
    address_policy: AddressPolicy = field(default_factory=AddressPolicy)  # which addresses may be fetched
    debug: bool = False
    options: dict[str, object] = field(default_factory=dict)  # recorded on the batch, for the record

    def __post_init__(self) -> None:
        validate_tenant(self.tenant)
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if self.parse_workers < 0:
            raise UsageError("--parse-workers must be 0 or more")
        if self.timeout <= 0:
            raise UsageError("--timeout must be a positive number of seconds")
        if self.db_pool_size < 0:
            raise UsageError("--db-pool-size must be 0 or more")
        if self.max_bytes < 1024:
            raise UsageError("--max-bytes must be at least 1024")
        if self.store_urls < 0:
            raise UsageError("--store-urls must be 0 or more")
        if not (self.homepage or self.sitemaps):
            raise UsageError("nothing to scan: neither homepages nor sitemaps")

    @property
    def is_default_database(self) -> bool:
        return self.database_url is None

    def resolved_database_url(self) -> str:
        return self.database_url or default_database_url()

    @classmethod
    def for_scan(
        cls,
        *,
        tenant: str,
        database_url: str | None,
        store: bool,
        db_pool_size: int,
        concurrency: int,
        timeout: float,
        max_bytes: int,
        user_agent: str,
        phone_region: str | None,
        allow_net: list[str],
        debug: bool,
        homepage: bool = True,
        sitemaps: bool = False,
        store_urls: int = 0,
        parse_workers: int | None = None,
    ) -> Settings:
        """Settings for a scan, with the scan options recorded on the batch (so a resume can reuse them)."""
        from domainscan.netpolicy import parse_networks

        options: dict[str, object] = {
            "concurrency": concurrency,
            "timeout": timeout,
            "max_bytes": max_bytes,
            "user_agent": user_agent,
            "phone_region": phone_region,
            "allow_net": list(allow_net),
            "homepage": homepage,
            "sitemaps": sitemaps,
            "store_urls": store_urls,
        }
        return cls(
            tenant=tenant,
            database_url=database_url,
            store=store,
            db_pool_size=db_pool_size,
            concurrency=concurrency,
            parse_workers=default_parse_workers() if parse_workers is None else parse_workers,
            timeout=timeout,
            max_bytes=max_bytes,
            user_agent=user_agent,
            phone_region=phone_region.upper() if phone_region else None,
            debug=debug,
            address_policy=AddressPolicy(parse_networks(allow_net)),
            homepage=homepage,
            sitemaps=sitemaps,
            store_urls=store_urls,
            options=options,
        )

    def for_batch(self, options: dict[str, Any]) -> Settings:
        """These settings with the scan options a stored batch was started with (for --resume)."""

        def pick(key: str, default: Any) -> Any:
            return options.get(key, default)

        return Settings.for_scan(
            tenant=self.tenant,
            database_url=self.database_url,
            store=self.store,
            db_pool_size=self.db_pool_size,
            concurrency=int(pick("concurrency", self.concurrency)),
            timeout=float(pick("timeout", self.timeout)),
            max_bytes=int(pick("max_bytes", self.max_bytes)),
            user_agent=str(pick("user_agent", self.user_agent)),
            phone_region=pick("phone_region", self.phone_region),
            allow_net=[str(n) for n in pick("allow_net", [])],
            debug=self.debug,
            # Batches stored before these options existed scanned homepages only.
            homepage=bool(pick("homepage", True)),
            sitemaps=bool(pick("sitemaps", False)),
            store_urls=int(pick("store_urls", 0)),
            parse_workers=self.parse_workers,  # a property of this machine, not of the batch
        )
