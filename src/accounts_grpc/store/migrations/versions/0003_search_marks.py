"""search marks: the accounts search index marks closed accounts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:00:00

SQLite only (PostgreSQL: nothing changes). The FTS5 index over accounts gets a third
column, ``mark``, that holds ``MARK`` for a closed account and nothing for an open one.
A search of the open accounts (what ListAccounts shows unless ``show_closed``) then
leaves the closed ones out inside the index (``... NOT {mark} : MARK``), and its number
of hits is its count: counting the open accounts that match no longer reads one table
row per hit to test ``closed`` (``store/listing/``, ``IndexScope``).

The index stays external-content. Its content table is now a view,
``accounts_search_source``, which spells the mark out of ``closed`` (FTS5 reads the
content table only to ``'rebuild'`` and to check integrity). The triggers feed the mark
from the row, and an update of ``closed`` re-indexes the row. ``MARK`` is three U+0001
characters: a single trigram that validated names and emails cannot contain, so its
posting list holds the closed accounts and nothing else.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MARK_SQL = "char(1, 1, 1)"  # == listing.MARK

_CONTENT = (
    "CREATE VIEW accounts_search_source AS SELECT rowid AS rid, name, email_lower, "
    f"CASE WHEN closed THEN {MARK_SQL} END AS mark FROM accounts"
)


def _mark(row: str) -> str:
    return f"CASE WHEN {row}.closed THEN {MARK_SQL} END"


def _marked_ddl() -> list[str]:
    values = {r: f"{r}.rowid, {r}.name, {r}.email_lower, {_mark(r)}" for r in ("old", "new")}
    delete = ("INSERT INTO accounts_search(accounts_search, rowid, name, email_lower, mark) "
              f"VALUES ('delete', {values['old']});")
    insert = ("INSERT INTO accounts_search(rowid, name, email_lower, mark) "
              f"VALUES ({values['new']});")
    return [
        _CONTENT,
        "CREATE VIRTUAL TABLE accounts_search USING fts5(name, email_lower, mark, "
        "content='accounts_search_source', content_rowid='rid', "
        "tokenize='trigram case_sensitive 0')",
        f"CREATE TRIGGER accounts_search_ai AFTER INSERT ON accounts BEGIN {insert} END",
        f"CREATE TRIGGER accounts_search_ad AFTER DELETE ON accounts BEGIN {delete} END",
        "CREATE TRIGGER accounts_search_au AFTER UPDATE OF name, email_lower, closed "
        f"ON accounts BEGIN {delete} {insert} END",
    ]


def _drop() -> None:
    for suffix in ("ai", "ad", "au"):
        op.execute(f"DROP TRIGGER IF EXISTS accounts_search_{suffix}")
    op.execute("DROP TABLE IF EXISTS accounts_search")
    op.execute("DROP VIEW IF EXISTS accounts_search_source")


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _drop()
    for stmt in _marked_ddl():
        op.execute(stmt)
    op.execute("INSERT INTO accounts_search(accounts_search) VALUES ('rebuild')")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    from importlib import import_module

    previous = import_module("accounts_grpc.store.migrations.versions.0002_search_indexes")
    _drop()
    for stmt in previous.sqlite_search_ddl("accounts", previous.SEARCH["accounts"]):
        op.execute(stmt)
    op.execute("INSERT INTO accounts_search(accounts_search) VALUES ('rebuild')")
