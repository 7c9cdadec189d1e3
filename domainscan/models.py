"""Plain values passed between the stages: input -> Target -> Fetched -> PageFacts -> ScanResult.

They are dataclasses, not ORM objects, so any stage can hold them after its session or client is gone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domainscan.errors import ErrorKind


@dataclass(frozen=True, slots=True)
class Target:
    """A valid, normalized domain to scan.

    `domain` is the storage key: lower-case ASCII (IDN as punycode), no leading ``www.``, with ``:port``
    appended when the input named a port. `host` is the same without the port.
    """

    domain: str
    host: str
    port: int | None
    input: str
    line: int | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class InvalidInput:
    """An input line that normalization rejected; it still becomes a record (`invalid_domain`)."""

    input: str
    reason: str
    line: int | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """The final response of a homepage fetch, after redirects. `body` is decompressed and capped."""

    url: str
    http_status: int
    redirects: tuple[str, ...]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes
    truncated: bool
    encoding: str | None  # the charset the body should be decoded with, when known
    elapsed_ms: int
    is_html: bool

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    @property
    def server(self) -> str | None:
        return self.headers.get("server")


@dataclass(frozen=True, slots=True)
class TechHit:
    """A technology recognized on a page; `version` when a rule captured one."""

    name: str
    version: str | None
    categories: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "categories": list(self.categories)}


@dataclass(slots=True)
class PageCounts:
    images: int = 0
    scripts: int = 0
    stylesheets: int = 0
    links: int = 0
    words: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "images": self.images,
            "scripts": self.scripts,
            "stylesheets": self.stylesheets,
            "links": self.links,
            "words": self.words,
        }


@dataclass(slots=True)
class PageFacts:
    """What a homepage says about its site. Absent facts are None, empty lists or empty dicts."""

    title: str | None = None
    description: str | None = None
    language: str | None = None
    canonical_url: str | None = None
    favicon_url: str | None = None
    logo_url: str | None = None
    open_graph: dict[str, str] = field(default_factory=dict)
    twitter: dict[str, str] = field(default_factory=dict)
    json_ld_types: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    social: dict[str, str] = field(default_factory=dict)
    tech: list[TechHit] = field(default_factory=list)
    page: PageCounts = field(default_factory=PageCounts)
    # <link rel="sitemap"> targets, absolute: where the sitemap scan looks besides robots.txt. Not a
    # field of the record (the sitemap fields say what was found there).
    sitemap_links: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class UrlEntry:
    """One page of a urlset (or a line of a text sitemap). `lastmod` is the string as written."""

    loc: str
    lastmod: str | None = None
    changefreq: str | None = None
    priority: float | None = None


@dataclass(frozen=True, slots=True)
class SitemapFileInfo:
    """One fetched sitemap URL, as the record's ``sitemap_files`` and the sitemap_files table show it.

    `kind` is ``urlset``, ``sitemapindex``, ``text``, ``html`` (a web page where a sitemap was expected)
    or None (nothing usable came back); `found_by` is ``robots``, ``link``, ``probe`` or ``index``.
    `url_count` counts the ``<loc>`` entries read (child sitemaps for an index). The lastmods are the
    newest and oldest ``<lastmod>`` as written. `capped`: a limit cut the file short.
    """

    url: str
    kind: str | None
    found_by: str | None
    url_count: int
    newest_lastmod: str | None
    oldest_lastmod: str | None
    http_status: int | None
    error: str | None
    capped: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "kind": self.kind,
            "found_by": self.found_by,
            "url_count": self.url_count,
            "newest_lastmod": self.newest_lastmod,
            "oldest_lastmod": self.oldest_lastmod,
            "http_status": self.http_status,
            "error": self.error,
            "capped": self.capped,
        }


@dataclass(slots=True)
class SitemapScan:
    """What the sitemap scan of one domain found (``--sitemaps``, ``domainscan sitemaps``).

    `urls` holds the page entries kept for storage (``--store-urls N``: at most N, each URL once; None
    without the option); they are not part of the output record.
    """

    sitemaps: list[str] = field(default_factory=list)
    url_count: int = 0
    robots_allows_root: bool | None = None
    files: list[SitemapFileInfo] = field(default_factory=list)
    urls: list[UrlEntry] | None = None


# The output record's fields, in the order they are written (GUIDE §4). Users parse these names.
RECORD_FIELDS: tuple[str, ...] = (
    "domain",
    "input",
    "tenant",
    "job_id",
    "batch_id",
    "status",
    "error_kind",
    "error",
    "url",
    "http_status",
    "redirects",
    "elapsed_ms",
    "scanned_at",
    "server",
    "content_type",
    "bytes",
    "truncated",
    "title",
    "description",
    "language",
    "canonical_url",
    "favicon_url",
    "logo_url",
    "open_graph",
    "twitter",
    "json_ld_types",
    "emails",
    "phones",
    "social",
    "tech",
    "is_wordpress",
    "wordpress_version",
    "has_elementor",
    "page",
)
# Added after RECORD_FIELDS, in this order, only to the records of domains whose sitemaps were scanned.
SITEMAP_FIELDS: tuple[str, ...] = ("sitemaps", "sitemap_url_count", "robots_allows_root", "sitemap_files")


@dataclass(slots=True)
class ScanResult:
    """The outcome of one input: a scanned domain (ok or error) or a rejected line."""

    domain: str | None
    input: str
    tenant: str
    scanned_at: str  # ISO 8601 UTC
    error_kind: ErrorKind | None = None
    error: str | None = None
    line: int | None = None
    job_id: int | None = None
    batch_id: int | None = None
    url: str | None = None
    http_status: int | None = None
    redirects: list[str] = field(default_factory=list)
    elapsed_ms: int | None = None
    server: str | None = None
    content_type: str | None = None
    bytes: int | None = None
    truncated: bool = False
    facts: PageFacts = field(default_factory=PageFacts)
    sitemap: SitemapScan | None = None  # None: sitemaps were not scanned

    @property
    def status(self) -> str:
        return "ok" if self.error_kind is None else "error"

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    def to_record(self) -> dict[str, Any]:
        """The JSON Lines record of GUIDE §4, fields in RECORD_FIELDS order, then SITEMAP_FIELDS when
        sitemaps were scanned."""
        f = self.facts
        wp = next((t for t in f.tech if t.name == "WordPress"), None)
        record: dict[str, Any] = {
            "domain": self.domain,
            "input": self.input,
            "tenant": self.tenant,
            "job_id": self.job_id,
            "batch_id": self.batch_id,
            "status": self.status,
            "error_kind": None if self.error_kind is None else str(self.error_kind),
            "error": self.error,
            "url": self.url,
            "http_status": self.http_status,
            "redirects": list(self.redirects),
            "elapsed_ms": self.elapsed_ms,
            "scanned_at": self.scanned_at,
            "server": self.server,
            "content_type": self.content_type,
            "bytes": self.bytes,
            "truncated": self.truncated,
            "title": f.title,
            "description": f.description,
            "language": f.language,
            "canonical_url": f.canonical_url,
            "favicon_url": f.favicon_url,
            "logo_url": f.logo_url,
            "open_graph": dict(f.open_graph),
            "twitter": dict(f.twitter),
            "json_ld_types": list(f.json_ld_types),
            "emails": list(f.emails),
            "phones": list(f.phones),
            "social": dict(f.social),
            "tech": [t.to_dict() for t in f.tech],
            "is_wordpress": wp is not None,
            "wordpress_version": wp.version if wp else None,
            "has_elementor": any(t.name == "Elementor" for t in f.tech),
            "page": f.page.to_dict(),
        }
        if (sm := self.sitemap) is not None:
            record["sitemaps"] = list(sm.sitemaps)
            record["sitemap_url_count"] = sm.url_count
            record["robots_allows_root"] = sm.robots_allows_root
            record["sitemap_files"] = [file.to_dict() for file in sm.files]
        return record


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A stored batch, as the read commands show it."""

    id: int
    tenant: str
    status: str  # running | complete | interrupted | failed
    source: str
    options: dict[str, Any]
    total: int
    ok: int
    failed: int
    invalid: int
    duplicates: int
    created_at: str
    finished_at: str | None
    heartbeat_at: str | None = None  # last sign of life of the process running it
    stale: bool = False  # running, but no heartbeat for a while: its process is most likely gone

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_id": self.id,
            "tenant": self.tenant,
            "status": self.status,
            "source": self.source,
            "options": dict(self.options),
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
            "heartbeat_at": self.heartbeat_at,
            "stale": self.stale,
        }


@dataclass(frozen=True, slots=True)
class DomainInfo:
    """A stored domain with its latest facts (`record` is the latest output record, or {})."""

    domain: str
    tenant: str
    status: str | None
    error_kind: str | None
    http_status: int | None
    title: str | None
    url: str | None
    first_seen_at: str
    last_scanned_at: str | None
    scans: int
    record: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "tenant": self.tenant,
            "status": self.status,
            "error_kind": self.error_kind,
            "http_status": self.http_status,
            "title": self.title,
            "url": self.url,
            "first_seen_at": self.first_seen_at,
            "last_scanned_at": self.last_scanned_at,
            "scans": self.scans,
        }


@dataclass(frozen=True, slots=True)
class JobInfo:
    """A stored job: one input of one batch and what became of it."""

    id: int
    tenant: str
    batch_id: int
    domain: str | None
    input: str
    line: int | None
    source: str | None
    status: str  # queued | running | succeeded | failed | cancelled
    error_kind: str | None
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    elapsed_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.id,
            "batch_id": self.batch_id,
            "domain": self.domain,
            "input": self.input,
            "line": self.line,
            "status": self.status,
            "error_kind": self.error_kind,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "elapsed_ms": self.elapsed_ms,
        }


@dataclass(slots=True)
class BatchReport:
    """What a finished (or stopped) run amounted to; the CLI turns it into a summary and an exit code."""

    batch_id: int | None
    status: str = "running"  # complete | interrupted | failed, once the run is over
    total: int = 0
    ok: int = 0
    failed: int = 0
    invalid: int = 0
    cancelled: int = 0
    duplicates: int = 0
    elapsed_s: float = 0.0
    signal: int | None = None
    storage_error: Exception | None = None  # a StorageError that outlived the retries
    spool_path: str | None = None  # where the records the database refused went
    spooled: int = 0

    @property
    def rate(self) -> float:
        return self.total / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ImportCounts:
    """What ``domainscan import SPOOL`` did with the spooled records.

    `imported`: stored now; `already_stored`: their job had its outcome already (an earlier import, or
    the write had succeeded after all); `skipped`: nothing to attach them to (no batch id, a batch or
    job that is not in this database, or a record that is not an output record).
    """

    imported: int = 0
    already_stored: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"imported": self.imported, "already_stored": self.already_stored, "skipped": self.skipped}
