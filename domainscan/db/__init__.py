"""Storage: the only package that knows SQLAlchemy, Alembic and the database drivers.

The rest of domainscan uses :func:`open_repository` and the :class:`Repository` it returns (one short
transaction per call, plain dataclasses back), :func:`upgrade_database` for ``domainscan db upgrade``,
and :func:`redact` to show a database URL without its password.
"""

from domainscan.db.migrate import HEAD, upgrade_database
from domainscan.db.repository import Repository, open_repository
from domainscan.db.urls import redact

__all__ = ["HEAD", "Repository", "open_repository", "redact", "upgrade_database"]
