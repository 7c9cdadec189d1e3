"""Schema migrations, run programmatically with Alembic (the scripts ship in ``domainscan/db/migrations``).

The version table is ``domainscan_alembic_version``, not Alembic's default ``alembic_version``: a team
database (a Supabase project, say) may already hold another application's Alembic history.

Two ``domainscan db upgrade`` runs (or two processes auto-upgrading one SQLite file) must not both create
the tables. Each upgrade is one transaction that first takes a lock and only then reads the current
revision: ``pg_advisory_xact_lock`` on PostgreSQL (released at commit, so it is safe behind a transaction
pooler, unlike a session lock) and ``BEGIN IMMEDIATE`` on SQLite (see :mod:`domainscan.db.engine`). Both
databases run DDL transactionally, so a failed upgrade leaves nothing half-made.

Alembic itself is imported only when the schema has to change: it adds ~80 ms to every start otherwise,
and checking the revision is one SELECT.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from sqlalchemy import column, inspect, select, table, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from domainscan.db.engine import create_engine, read_only
from domainscan.db.errors import wrap_db_errors
from domainscan.db.urls import display
from domainscan.errors import SchemaError

VERSION_TABLE = "domainscan_alembic_version"
HEAD = "0003"  # the revision this code needs; a test checks it is the head of migrations/versions
_LOCK_KEY = 0x646F6D61696E  # "domain": the pg_advisory_xact_lock key that serializes upgrades
_SCRIPTS = Path(__file__).with_name("migrations")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema to HEAD; safe to run concurrently and when already there."""
    with wrap_db_errors(engine.url):
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            await conn.run_sync(_upgrade_sync)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or None when domainscan's schema is not there at all."""
    with wrap_db_errors(engine.url):
        async with read_only(engine).connect() as conn:
            return await conn.run_sync(_current_sync)


async def check_schema(engine: AsyncEngine) -> None:
    """Raise SchemaError, saying what to run, unless the database is at exactly HEAD."""
    revision = await current_revision(engine)
    if revision == HEAD:
        return
    where = display(engine.url)
    # Quoted for a shell: a socket URL's query (?host=/run/postgresql&port=6432) holds a '&'.
    command = f"domainscan db upgrade --database-url {shlex.quote(where)}"
    if revision is None:
        raise SchemaError(f"database schema is missing; run: {command}")
    if not _is_known(revision):
        raise SchemaError(
            f"database schema at {where} is at revision {revision}, newer than this domainscan "
            f"(which needs {HEAD}); upgrade domainscan"
        )
    raise SchemaError(
        f"database schema at {where} is at revision {revision}, this domainscan needs {HEAD}; run: {command}"
    )


async def upgrade_database(url: str, *, connect_timeout: float = 10) -> tuple[str, str]:
    """``domainscan db upgrade``: bring the database at ``url`` to HEAD.

    Returns the revision it is now at and the database as it may be shown (password redacted).
    """
    engine = create_engine(url, connect_timeout=connect_timeout)
    try:
        if await current_revision(engine) != HEAD:
            await upgrade(engine)
        return HEAD, display(engine.url)
    finally:
        await engine.dispose()


def _upgrade_sync(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    try:
        command.upgrade(config, HEAD)
    except CommandError as exc:  # the database is at a revision these scripts do not know
        raise SchemaError(
            f"cannot upgrade {display(connection.engine.url)}: {exc}; is it used by a newer domainscan?"
        ) from exc


def _current_sync(connection: Connection) -> str | None:
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    version = table(VERSION_TABLE, column("version_num"))
    revisions = connection.execute(select(version.c.version_num)).scalars().all()
    return ", ".join(sorted(revisions)) or None  # one row, unless someone branched the history


def _is_known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        ScriptDirectory(str(_SCRIPTS)).get_revision(revision)
    except CommandError:
        return False
    return True
