"""search indexes: free-text list filters served by an index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 23:20:00

SQLite: an external-content FTS5 table with the trigram tokenizer (``case_sensitive
0``) per searchable table, ``<table>_search``, holding no copy of the text (content is
the base table, keyed by its implicit ``rowid``), kept in sync by AFTER INSERT / UPDATE /
DELETE triggers and filled from the existing rows. ``store/listing/`` queries it with
``MATCH`` (``ListSpec.search``).

Caveats of the external-content design, for whoever writes a later migration:

- the index is keyed by the base table's implicit rowid. A migration that rebuilds the
  base table (Alembic batch mode copies it to a new table and drops the old one) drops
  these triggers with it and may renumber the rowids: re-create them with
  :func:`sqlite_search_ddl` and ``INSERT INTO <t>_search(<t>_search) VALUES('rebuild')``.
- ``VACUUM`` may renumber rowids of a table without an INTEGER PRIMARY KEY (SQLite's
  documentation warns of it): run the same ``'rebuild'`` after a VACUUM.

PostgreSQL: ``pg_trgm`` GIN indexes on the same columns, which serve the ``ILIKE
'%term%'`` the list already issues (no query change). The extension lives in one fixed
schema (``public``, or wherever it already is) so that databases made with a per-test
``search_path`` share it; it is created under an advisory lock (concurrent ``CREATE
EXTENSION IF NOT EXISTS`` calls otherwise race on the catalog's unique index). Where the
extension is not available or may not be created, no index is made and lists keep
working, by sequential scan.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

#: base table -> the columns its search index covers (as ListSpec.search names them)
SEARCH: dict[str, tuple[str, ...]] = {
    "accounts": ("name", "email_lower"),
    "users": ("name", "email", "external_id"),
}

_TRGM_LOCK = 0x6163_6374_7267_6D  # pg_advisory_xact_lock key: "acctrgm"


def sqlite_search_ddl(table: str, columns: tuple[str, ...]) -> list[str]:
    """The FTS5 table over ``table.columns`` and the triggers that keep it in sync."""
    fts = f"{table}_search"
    cols = ", ".join(columns)
    new = ", ".join(f"new.{c}" for c in columns)
    old = ", ".join(f"old.{c}" for c in columns)
    delete = f"INSERT INTO {fts}({fts}, rowid, {cols}) VALUES ('delete', old.rowid, {old});"
    insert = f"INSERT INTO {fts}(rowid, {cols}) VALUES (new.rowid, {new});"
    return [
        f"CREATE VIRTUAL TABLE {fts} USING fts5({cols}, content='{table}', "
        f"content_rowid='rowid', tokenize='trigram case_sensitive 0')",
        f"CREATE TRIGGER {fts}_ai AFTER INSERT ON {table} BEGIN {insert} END",
        f"CREATE TRIGGER {fts}_ad AFTER DELETE ON {table} BEGIN {delete} END",
        f"CREATE TRIGGER {fts}_au AFTER UPDATE OF {cols} ON {table} "
        f"BEGIN {delete} {insert} END",
    ]


def _trgm_schema(bind: sa.Connection) -> str | None:
    """The schema holding pg_trgm, creating the extension in ``public`` if need be;
    None when it is not available here."""
    find = sa.text(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pg_trgm'"
    )
    schema = bind.execute(find).scalar()
    if schema is not None:
        return str(schema)
    available = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")
    ).scalar()
    if not available:
        log.warning("pg_trgm is not available: list filters will scan")
        return None
    # one creator at a time across sessions; held to the end of this transaction
    bind.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _TRGM_LOCK})
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public"))
    except sa.exc.DBAPIError as e:  # e.g. no CREATE privilege on the database
        log.warning("cannot create pg_trgm (%s): list filters will scan", e.orig)
        return None
    schema = bind.execute(find).scalar()
    return None if schema is None else str(schema)


def _trgm_index(table: str, column: str) -> str:
    return f"ix_{table}_{column}_trgm"


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    if dialect == "sqlite":
        for table, columns in SEARCH.items():
            for stmt in sqlite_search_ddl(table, columns):
                op.execute(stmt)
            op.execute(f"INSERT INTO {table}_search({table}_search) VALUES ('rebuild')")
    elif dialect == "postgresql":
        schema = _trgm_schema(bind)
        if schema is None:
            return
        ops = f'"{schema}".gin_trgm_ops'
        for table, columns in SEARCH.items():
            for column in columns:
                op.execute(
                    f"CREATE INDEX {_trgm_index(table, column)} ON {table} "
                    f"USING gin ({column} {ops})"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in SEARCH:
            for suffix in ("ai", "ad", "au"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_search_{suffix}")
            op.execute(f"DROP TABLE IF EXISTS {table}_search")
    elif dialect == "postgresql":
        # the extension stays: it is shared by every schema of the database
        for table, columns in SEARCH.items():
            for column in columns:
                op.execute(f"DROP INDEX IF EXISTS {_trgm_index(table, column)}")
