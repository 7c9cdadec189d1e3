"""Alembic environment for domainscan.

There is no alembic.ini and no offline mode: :mod:`domainscan.db.migrate` runs the migrations on a
connection it has already opened, inside a transaction that already holds the migration lock, and passes
that connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from domainscan.db.migrate import VERSION_TABLE
from domainscan.db.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("domainscan migrations run through `domainscan db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    # SQLite cannot ALTER most things; batch mode rebuilds tables instead, in later revisions.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
