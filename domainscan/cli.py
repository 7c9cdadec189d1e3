"""The command line: parse options into Settings, run, and map outcomes and errors to exit codes.

Nothing imports this module. It stays thin: the work happens in `pipeline`, reading back in `db`,
drawing in `report`. Heavy modules (HTTP client, lxml, SQLAlchemy) are imported inside the commands,
so `domainscan --help` and `--version` stay fast for cron jobs and CI smoke checks.
"""

from __future__ import annotations

import signal
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from domainscan import VERSION_LINE
from domainscan.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_DB_POOL_SIZE,
    DEFAULT_MAX_BYTES,
    DEFAULT_TENANT,
    DEFAULT_TIMEOUT,
    DEFAULT_USER_AGENT,
    FailOn,
    OutputFormat,
    Settings,
    validate_tenant,
)
from domainscan.errors import DomainscanError, InvalidDomain, StorageError, UsageError
from domainscan.report import Environment, make_writer, resolve_format, summary_line, write_all

if TYPE_CHECKING:
    from domainscan.db import Repository
    from domainscan.models import BatchReport, ScanResult
    from domainscan.parsing import PageParser

    ResultSink = Callable[[ScanResult], None]

T = TypeVar("T")


class ExitStatus(IntEnum):
    """Exit codes (GUIDE §5); cron jobs and CI branch on them."""

    OK = 0
    DOMAIN_FAILED = 1
    USAGE = 2
    STORAGE = 3
    INTERRUPTED = 130
    TERMINATED = 143


app = typer.Typer(
    name="domainscan",
    help="Scan web domains: status, redirects, title, description, tech, contacts and social profiles, "
    "stored per tenant.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
db_app = typer.Typer(help="Create or update the database schema.", no_args_is_help=True)
domains_app = typer.Typer(help="Read back the domains stored for a tenant.", no_args_is_help=True)
batches_app = typer.Typer(help="Read back, or resume, the batches run for a tenant.", no_args_is_help=True)
jobs_app = typer.Typer(help="Read back the jobs (one per input) of a tenant's batches.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(domains_app, name="domains")
app.add_typer(batches_app, name="batches")
app.add_typer(jobs_app, name="jobs")

TenantOption = Annotated[
    str,
    typer.Option(
        "--tenant",
        "-t",
        envvar="DOMAINSCAN_TENANT",
        metavar="NAME",
        help="Whose data this is: 1-64 letters, digits, '-', '_' or '.'.",
    ),
]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="DOMAINSCAN_DATABASE_URL",
        show_default=False,
        metavar="URL",
        help="sqlite:///file.db or postgresql://user:pass@host:port/db "
        "[default: a SQLite file in the user data directory]",
    ),
]
FormatOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--format",
        "-o",
        envvar="DOMAINSCAN_FORMAT",
        show_default=False,
        help="Output format [default: table on a terminal, jsonl otherwise].",
    ),
]
PoolOption = Annotated[
    int,
    typer.Option(
        "--db-pool-size",
        envvar="DOMAINSCAN_DB_POOL_SIZE",
        min=0,
        max=50,
        metavar="N",
        help="PostgreSQL: keep up to N connections open between a batch's short transactions "
        "(safe behind PgBouncer or Supavisor in transaction mode too). 0 opens a new one per operation.",
    ),
]
FailOnOption = Annotated[
    FailOn,
    typer.Option(
        envvar="DOMAINSCAN_FAIL_ON",
        help="'error': exit 1 when any domain failed; 'never': exit 0 unless the run itself failed.",
    ),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no summary line.")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(VERSION_LINE)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Scan web domains and keep what each site says about itself, per tenant."""


@contextmanager
def _guard(env: Environment, debug: bool) -> Iterator[None]:
    """The one place that turns exceptions into a one-line message and an exit code."""
    try:
        yield
    except typer.Exit:
        raise
    except StorageError as exc:
        _fail(env, str(exc), ExitStatus.STORAGE, debug)
    except (UsageError, InvalidDomain) as exc:
        _fail(env, str(exc), ExitStatus.USAGE, debug)
    except DomainscanError as exc:
        _fail(env, str(exc), ExitStatus.DOMAIN_FAILED, debug)
    except KeyboardInterrupt:
        _fail(env, "interrupted", ExitStatus.INTERRUPTED, debug)
    except Exception as exc:  # noqa: BLE001 - the last line of defence; say what it was, in one line
        _fail(
            env,
            f"internal error: {type(exc).__name__}: {exc} (run with --debug for details)",
            ExitStatus.DOMAIN_FAILED,
            debug,
        )


def _fail(env: Environment, message: str, status: ExitStatus, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exc(file=env.stderr)
    env.error(message.splitlines()[0] if message else type(message).__name__)
    raise typer.Exit(int(status))


@asynccontextmanager
async def _repository(database_url: str | None, pool_size: int = 0) -> AsyncIterator[Repository]:
    """The repository for one command. SQLite files (the embedded default included) are created and
    upgraded on first use; a shared database is only checked: `domainscan db upgrade` changes it."""
    from domainscan.config import default_database_url
    from domainscan.db import open_repository

    url = database_url or default_database_url()
    repo = await open_repository(url, pool_size=pool_size, auto_upgrade=url.startswith("sqlite"))
    try:
        yield repo
    finally:
        await repo.close()


def _run(main: Coroutine[Any, Any, T]) -> T:
    """Run the coroutine of one command on a new event loop (uvloop's where it exists), its warnings
    (a retried database operation, a parser crash) on stderr like the tool's other messages. Imported
    here, not at the top: `--help` and `--version` need neither asyncio nor logging."""
    import asyncio
    import logging

    class Stderr(logging.Handler):  # whatever sys.stderr is when a warning comes
        def emit(self, record: logging.LogRecord) -> None:
            sys.stderr.write(f"domainscan: {record.levelname.lower()}: {record.getMessage()}\n")
            sys.stderr.flush()

    logger = logging.getLogger("domainscan")
    if not any(handler.name == "domainscan-stderr" for handler in logger.handlers):
        handler = Stderr(logging.WARNING)
        handler.set_name("domainscan-stderr")
        logger.addHandler(handler)
    try:  # libuv's loop: a fifth less CPU per fetch than asyncio's own (bench/); not on Windows
        from uvloop import new_event_loop
    except ImportError:  # pragma: no cover - platforms without uvloop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


def _with_repository(database_url: str | None, operation: Callable[[Repository], Awaitable[T]]) -> T:
    """Run one async operation against the repository, from synchronous command code."""

    async def go() -> T:
        async with _repository(database_url) as repo:
            return await operation(repo)

    return _run(go())


DomainsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Domains or URLs to scan, e.g. example.com or https://www.example.com/about.",
        metavar="DOMAIN",
        show_default=False,
    ),
]
FileOption = Annotated[
    list[str] | None,
    typer.Option(
        "--file",
        "-f",
        help="Read domains from a file, one per line or a CSV with a domain/url/website "
        "column; '-' reads standard input. Repeatable.",
        metavar="PATH",
        show_default=False,
    ),
]
NoStoreOption = Annotated[
    bool, typer.Option("--no-store", help="Scan without writing to the database (CI smoke checks).")
]
ConcurrencyOption = Annotated[
    int,
    typer.Option(
        envvar="DOMAINSCAN_CONCURRENCY",
        min=1,
        max=2000,
        metavar="N",
        help="Domains scanned at the same time.",
    ),
]
TimeoutOption = Annotated[
    float,
    typer.Option(
        envvar="DOMAINSCAN_TIMEOUT",
        min=0.1,
        metavar="SECONDS",
        help="Deadline in seconds for each domain, all attempts and redirects included "
        "(and its robots.txt and sitemaps).",
    ),
]
UserAgentOption = Annotated[
    str,
    typer.Option(envvar="DOMAINSCAN_USER_AGENT", metavar="TEXT", help="User-Agent header sent to sites."),
]
AllowNetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-net",
        envvar="DOMAINSCAN_ALLOW_NET",
        metavar="CIDR",
        show_default=False,
        help="Also fetch from this network, e.g. 127.0.0.0/8 for a local test farm or 10.0.0.0/8 for "
        "an intranet. Repeatable. By default only public addresses are contacted: loopback, private, "
        "link-local (cloud metadata), shared, multicast and reserved addresses are refused as 'blocked'.",
    ),
]
StoreUrlsOption = Annotated[
    int,
    typer.Option(
        "--store-urls",
        envvar="DOMAINSCAN_STORE_URLS",
        min=0,
        metavar="N",
        help="Also store up to N page URLs per domain from its sitemaps (with lastmod, changefreq and "
        "priority) in the sitemap_urls table. 0 stores none.",
    ),
]


@app.command()
def scan(
    ctx: typer.Context,
    domains: DomainsArgument = None,
    file: FileOption = None,
    tenant: TenantOption = DEFAULT_TENANT,
    database_url: DatabaseUrlOption = None,
    db_pool_size: PoolOption = DEFAULT_DB_POOL_SIZE,
    no_store: NoStoreOption = False,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    parse_workers: Annotated[
        int | None,
        typer.Option(
            envvar="DOMAINSCAN_PARSE_WORKERS",
            min=0,
            max=64,
            metavar="N",
            show_default=False,
            help="Processes that parse homepages while the main one fetches; 0 parses in the main "
            "process. [default: one per CPU core beyond the first, at most 4]",
        ),
    ] = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    max_bytes: Annotated[
        int,
        typer.Option(
            envvar="DOMAINSCAN_MAX_BYTES",
            min=1024,
            metavar="BYTES",
            help="Read at most this many (decompressed) bytes of a homepage.",
        ),
    ] = DEFAULT_MAX_BYTES,
    user_agent: UserAgentOption = DEFAULT_USER_AGENT,
    phone_region: Annotated[
        str | None,
        typer.Option(
            envvar="DOMAINSCAN_PHONE_REGION",
            show_default=False,
            metavar="REGION",
            help="Region for phone numbers written without a country code, e.g. US or GB "
            "[default: from the domain's country TLD].",
        ),
    ] = None,
    allow_net: AllowNetOption = None,
    sitemaps: Annotated[
        bool,
        typer.Option(
            "--sitemaps",
            envvar="DOMAINSCAN_SITEMAPS",
            help="Also scan each site's robots.txt and sitemaps (within the same --timeout).",
        ),
    ] = False,
    store_urls: StoreUrlsOption = 0,
    output_format: FormatOption = None,
    fail_on: FailOnOption = FailOn.ERROR,
    resume: Annotated[
        int | None,
        typer.Option(
            "--resume",
            metavar="BATCH_ID",
            show_default=False,
            help="Finish an interrupted batch: scan its stored inputs that have no outcome yet, with the "
            "options it was started with.",
        ),
    ] = None,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Scan domains given as arguments, in files, or on standard input (--file -)."""
    env = Environment()
    with _guard(env, debug):
        if not sitemaps:
            # DOMAINSCAN_STORE_URLS in a .env applies to sitemap scans only; on the command line it is a slip.
            source = ctx.get_parameter_source("store_urls")
            if store_urls and source is not None and source.name == "COMMANDLINE":
                raise UsageError("--store-urls stores the page URLs of sitemaps: add --sitemaps")
            store_urls = 0
        settings = Settings.for_scan(
            tenant=tenant,
            database_url=database_url,
            store=not no_store,
            db_pool_size=db_pool_size,
            concurrency=concurrency,
            timeout=timeout,
            max_bytes=max_bytes,
            user_agent=user_agent,
            phone_region=phone_region,
            allow_net=list(allow_net or []),
            debug=debug,
            sitemaps=sitemaps,
            store_urls=store_urls,
            parse_workers=parse_workers,
        )
        if resume is not None:
            if domains or file or no_store:
                raise UsageError("--resume takes no domains, no --file and no --no-store: the batch has them")
            report = _resume(settings, env, resume, resolve_format(output_format, env), quiet=quiet)
        else:
            report = _scan_inputs(settings, env, domains, file, output_format, quiet=quiet)
        raise typer.Exit(int(_exit_status(report, fail_on, env, settings)))


@app.command("sitemaps")
def sitemaps_command(
    domains: DomainsArgument = None,
    file: FileOption = None,
    tenant: TenantOption = DEFAULT_TENANT,
    database_url: DatabaseUrlOption = None,
    db_pool_size: PoolOption = DEFAULT_DB_POOL_SIZE,
    no_store: NoStoreOption = False,
    concurrency: ConcurrencyOption = DEFAULT_CONCURRENCY,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    user_agent: UserAgentOption = DEFAULT_USER_AGENT,
    allow_net: AllowNetOption = None,
    store_urls: StoreUrlsOption = 0,
    output_format: FormatOption = None,
    fail_on: FailOnOption = FailOn.ERROR,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Scan only robots.txt and the sitemaps of domains (no homepage), like `scan --sitemaps` otherwise.

    robots.txt stands in for the homepage: found the same way (https, http, www.), it decides the
    status and fills url and http_status. A stopped batch resumes with `domainscan scan --resume ID`.
    """
    env = Environment()
    with _guard(env, debug):
        settings = Settings.for_scan(
            tenant=tenant,
            database_url=database_url,
            store=not no_store,
            db_pool_size=db_pool_size,
            concurrency=concurrency,
            timeout=timeout,
            max_bytes=DEFAULT_MAX_BYTES,
            user_agent=user_agent,
            phone_region=None,
            allow_net=list(allow_net or []),
            debug=debug,
            homepage=False,
            sitemaps=True,
            store_urls=store_urls,
        )
        report = _scan_inputs(settings, env, domains, file, output_format, quiet=quiet)
        raise typer.Exit(int(_exit_status(report, fail_on, env, settings)))


def _scan_inputs(
    settings: Settings,
    env: Environment,
    domains: list[str] | None,
    file: list[str] | None,
    output_format: OutputFormat | None,
    *,
    quiet: bool,
) -> BatchReport:
    """A new batch of the domains given as arguments and in files (`scan` and `sitemaps` alike)."""
    from domainscan.inputs import check_sources, iter_inputs

    if not domains and not file:
        raise UsageError("nothing to scan: give domains as arguments or --file PATH ('-' for stdin)")
    fmt = resolve_format(output_format, env)
    files = list(file or [])
    check_sources(files)
    items = iter_inputs(list(domains or []), files, env.stdin)
    source = ", ".join((["arguments"] if domains else []) + ["stdin" if f == "-" else f for f in files])
    return _scan(settings, env, items, source, fmt, quiet=quiet)


def _scan(
    settings: Settings, env: Environment, items: Any, source: str, fmt: OutputFormat, *, quiet: bool
) -> BatchReport:
    from domainscan.parsing import PageParser

    async def start(repo: Repository | None, sink: ResultSink) -> BatchReport:
        from domainscan.pipeline import run_batch  # the HTTP client: imported while the parsers start

        _collect_less()
        return await run_batch(settings, items, source=source, repo=repo, sink=sink, parser=parser)

    # Started before the database is opened and the HTTP client imported: the workers' own start (an
    # interpreter, lxml, the fingerprints) then overlaps the main process's instead of following it.
    parser = PageParser(settings.parse_workers if settings.homepage else 0)
    return _drive(settings, env, fmt, start, quiet=quiet, parser=parser)


def _resume(
    settings: Settings, env: Environment, batch_id: int, fmt: OutputFormat, *, quiet: bool
) -> BatchReport:
    from domainscan.pipeline import resume_batch

    async def start(repo: Repository | None, sink: ResultSink) -> BatchReport:
        assert repo is not None
        _collect_less()
        stored = await repo.get_batch(settings.tenant, batch_id)
        if stored is None:
            raise UsageError(f"no batch {batch_id} for tenant {settings.tenant}")
        info, report = await resume_batch(settings.for_batch(stored.options), batch_id, repo=repo, sink=sink)
        if info.status == "complete" and not quiet:
            print(f"batch {batch_id} is already complete: nothing to resume", file=env.stderr)
        return report

    return _drive(settings, env, fmt, start, quiet=quiet)


def _collect_less() -> None:
    """Tune the garbage collector for a batch, once everything it needs is imported.

    A scan allocates thousands of objects per domain and reference counting frees nearly all of them;
    the collector's passes, over the young objects and over the hundreds of thousands that SQLAlchemy,
    aiohttp and the rest left at start-up, found almost nothing and cost 0.9 s of a 2000-domain batch
    (gc.callbacks, on the bench farm). Those start-up objects are frozen (never scanned again) and the
    young generation is collected every 10,000 allocations instead of 700: 0.2 s, the same peak memory.
    """
    import gc

    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _drive(
    settings: Settings,
    env: Environment,
    fmt: OutputFormat,
    start: Callable[[Repository | None, ResultSink], Awaitable[BatchReport]],
    *,
    quiet: bool,
    parser: PageParser | None = None,
) -> BatchReport:
    """Output, progress, the repository and (when given) the page parser around one run of the
    pipeline; the parser starts first."""
    from domainscan.report import BatchProgress

    writer = make_writer(fmt, env)
    with BatchProgress(env, enabled=not quiet) as progress:

        def sink(result: ScanResult) -> None:
            writer.write(result.to_record())
            progress.advance(result.ok)

        async def go() -> BatchReport:
            async with AsyncExitStack() as stack:
                if parser is not None:
                    await stack.enter_async_context(parser)
                if not settings.store:
                    return await start(None, sink)
                repo = await stack.enter_async_context(
                    _repository(settings.database_url, settings.db_pool_size)
                )
                return await start(repo, sink)

        try:
            report = _run(go())
        finally:
            writer.close()
    if not quiet:
        print(summary_line(report), file=env.stderr, flush=True)
    return report


def _exit_status(report: BatchReport, fail_on: FailOn, env: Environment, settings: Settings) -> ExitStatus:
    resume = f"domainscan scan --resume {report.batch_id} --tenant {settings.tenant}"
    if settings.database_url is not None:
        resume += " --database-url URL"
    if report.storage_error is not None:
        env.error(f"{report.storage_error}")
        if report.spool_path is not None:
            env.error(
                f"{report.spooled} results could not be stored; they are in {report.spool_path} "
                f"(load them with: domainscan import {report.spool_path} --tenant {settings.tenant})"
            )
        if report.batch_id is not None and report.status != "complete":
            after = "after the import, finish" if report.spool_path is not None else "to finish"
            env.error(f"{after} the batch with: {resume}")
        return ExitStatus.STORAGE
    if report.signal is not None:
        if report.batch_id is not None:
            env.error(f"interrupted; batch {report.batch_id} is marked interrupted; resume with: {resume}")
        return ExitStatus.TERMINATED if report.signal == signal.SIGTERM else ExitStatus.INTERRUPTED
    if fail_on is FailOn.ERROR and (report.failed or report.invalid):
        return ExitStatus.DOMAIN_FAILED
    return ExitStatus.OK


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrlOption = None, debug: DebugOption = False) -> None:
    """Create the schema or bring it up to date (safe to run from several processes at once)."""
    env = Environment()
    with _guard(env, debug):
        from domainscan.config import default_database_url
        from domainscan.db import upgrade_database

        revision, where = _run(upgrade_database(database_url or default_database_url()))
        print(f"{where} is at schema revision {revision}", file=env.stderr)


@domains_app.command("list")
def domains_list(
    tenant: TenantOption = DEFAULT_TENANT,
    database_url: DatabaseUrlOption = None,
    output_format: FormatOption = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only domains whose last scan was 'ok' or 'error'.", metavar="ok|error", show_default=False
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Show at most this many.", metavar="N", show_default=False)
    ] = None,
    debug: DebugOption = False,
) -> None:
    """List the tenant's domains with the outcome of their latest scan."""
    env = Environment()
    with _guard(env, debug):
        validate_tenant(tenant)
        if status not in (None, "ok", "error"):
            raise UsageError("--status must be 'ok' or 'error'")

        columns = ["domain", "status", "error_kind", "http_status", "title", "last_scanned_at", "scans"]
        writer = make_writer(resolve_format(output_format, env), env, columns=columns)

        async def write_rows(repo: Repository) -> None:
            async for info in repo.list_domains(tenant, limit=limit, status=status):
                writer.write(info.to_dict())

        _with_repository(database_url, write_rows)
        writer.close()


@domains_app.command("show")
def domains_show(
    domain: Annotated[
        str, typer.Argument(help="The domain, as scanned (www. and scheme are ignored).", metavar="DOMAIN")
    ],
    tenant: TenantOption = DEFAULT_TENANT,
    database_url: DatabaseUrlOption = None,
    output_format: FormatOption = None,
    debug: DebugOption = False,
) -> None:
    """Show the latest full record stored for one domain."""
    env = Environment()
    with _guard(env, debug):
        validate_tenant(tenant)
        from domainscan.domains import normalize

        key = normalize(domain).domain

        info = _with_repository(database_url, lambda repo: repo.get_domain(tenant, key))
        record = None if info is None else (info.record or info.to_dict())
        if record is None:
            env.error(f"no domain {key} stored for tenant {tenant}")
            raise typer.Exit(int(ExitStatus.DOMAIN_FAILED))
        write_all(make_writer(resolve_format(output_format, env), env), [record])


BATCH_COLUMNS = [
    "batch_id",
    "status",
    "total",
    "ok",
    "failed",
    "invalid",
    "duplicates",
    "created_at",
    "finished_at",
    "source",
]


@batches_app.command("list")
def batches_list(
    tenant: TenantOption = DEFAULT_TENANT,
    database_url: DatabaseUrlOption = None,
    output_format: FormatOption = None,
    limit: Annotated[
        int, typer.Option(min=1, metavar="N", help="Show at most this many, newest first.")
    ] = 50,
    debug: DebugOption = False,
) -> None:
    """List the tenant's batches, newest first."""
    env = Environment()
    with _guard(env, debug):
        validate_tenant(tenant)

        batches = _with_repository(database_url, lambda repo: repo.list_batches(tenant, limit=limit))
        writer = make_writer(resolve_format(output_format, env), env, columns=BATCH_COLUMNS)
        write_all(writer, (b.to_dict() for b in batches))


@batches_app.command("show")
def batches_show(
    batch_id: Annotated[int, typer.Argument(help="The batch id printed by scan.", metavar="ID")],
    tenant: TenantOption = DEFAULT_TENANT,
    database_url: DatabaseUrlOption = None,
    output_format: FormatOption = None,
    debug: DebugOption = False,
) -> None:
    """Show one batch: its source, options, counts and job states."""
    env = Environment()
    with _guard(env, debug):
        validate_tenant(tenant)

        async def batch_with_jobs(repo: Repository) -> dict[str, Any] | None:
            info = await repo.get_batch(tenant, batch_id)
            if info is None:
                return None
            return {**info.to_dict(), "jobs": await repo.job_counts(tenant, batch_id)}

        row = _with_repository(database_url, batch_with_jobs)
        if row is None:
            env.error(f"no batch {batch_id} for tenant {tenant}")
            raise typer.Exit(int(ExitStatus.DOMAIN_FAILED))
        columns = [*BATCH_COLUMNS, "options", "jobs"]
        fmt = resolve_format(output_format, env)
        write_all(make_writer(fmt, env, columns=None if fmt is OutputFormat.TABLE else columns), [row])


@batches_app.command("resume")
def batches_resume(
    batch_id: Annotated[int, typer.Argument(help="The batch to finish.", metavar="ID")],
    tenant: TenantOption = DEFAULT_TENANT,
    database_url: DatabaseUrlOption = None,
    db_pool_size: PoolOption = DEFAULT_DB_POOL_SIZE,
    output_format: FormatOption = None,
    fail_on: FailOnOption = FailOn.ERROR,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Finish an interrupted batch (the same as `domainscan scan --resume ID`)."""
    env = Environment()
    with _guard(env, debug):
        settings = Settings(tenant=tenant, database_url=database_url, db_pool_size=db_pool_size, debug=debug)
        report = _resume(settings, env, batch_id, resolve_format(output_format, env), quiet=quiet)
        raise typer.Exit(int(_exit_status(report, fail_on, env, settings)))


JOB_COLUMNS = [
    "job_id",
    "batch_id",
    "domain",
    "input",
    "status",
    "error_kind",
    "started_at",
    "finished_at",
    "elapsed_ms",
]


@jobs_app.command("list")
def jobs_list(
    tenant: TenantOption = DEFAULT_TENANT,
    database_url: DatabaseUrlOption = None,
    output_format: FormatOption = None,
    batch: Annotated[
        int | None,
        typer.Option("--batch", metavar="ID", show_default=False, help="Only the jobs of this batch."),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            metavar="STATUS",
            show_default=False,
            help="Only jobs in this state: queued, running, succeeded, failed or cancelled.",
        ),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, metavar="N", show_default=False, help="Show at most this many.")
    ] = None,
    debug: DebugOption = False,
) -> None:
    """List jobs: domain, status, error kind, started, finished and elapsed time, oldest first."""
    env = Environment()
    with _guard(env, debug):
        validate_tenant(tenant)
        if status not in (None, "queued", "running", "succeeded", "failed", "cancelled"):
            raise UsageError("--status must be queued, running, succeeded, failed or cancelled")
        writer = make_writer(resolve_format(output_format, env), env, columns=JOB_COLUMNS)

        async def write_rows(repo: Repository) -> None:
            async for info in repo.list_jobs(tenant, batch_id=batch, status=status, limit=limit):
                writer.write(info.to_dict())

        _with_repository(database_url, write_rows)
        writer.close()


@app.command("import")
def import_spool(
    spool: Annotated[Path, typer.Argument(help="A spool file printed by an earlier scan.", metavar="SPOOL")],
    tenant: TenantOption = DEFAULT_TENANT,
    database_url: DatabaseUrlOption = None,
    debug: DebugOption = False,
) -> None:
    """Store the results a scan could not write (its spool file); safe to run more than once.

    Records whose batch or job this database does not have are skipped; when that is all of them,
    the database is most likely not the scan's, and the import fails (exit 2).
    """
    env = Environment()
    with _guard(env, debug):
        validate_tenant(tenant)
        from domainscan.spool import read_spool

        records = list(read_spool(spool))
        counts = _with_repository(database_url, lambda repo: repo.import_records(tenant, records))
        if counts.skipped and not (counts.imported or counts.already_stored):
            raise UsageError(
                f"none of the {counts.skipped} records in {spool} belongs to a batch of this database "
                "(is --database-url the one the scan used?); nothing was imported"
            )
        skipped = " (no batch or job of this database, or not a record)" if counts.skipped else ""
        print(
            f"{spool}: {counts.imported} imported, {counts.already_stored} already stored, "
            f"{counts.skipped} skipped{skipped}",
            file=env.stderr,
        )


def run() -> None:
    """Entry point: load .env (without overriding the environment), then run the app."""
    from dotenv import find_dotenv, load_dotenv

    load_dotenv(find_dotenv(usecwd=True), override=False)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(int(ExitStatus.INTERRUPTED))
