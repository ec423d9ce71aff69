"""account counts: the number of accounts, and of open accounts, kept by triggers

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 01:00:00

``account_counts`` holds one row (``id = 1``): ``all_accounts`` and ``open_accounts``
(``closed`` false). Triggers on ``accounts`` keep both exact in the transaction of every
write that changes them, whatever code writes (the service, the bench seeder, a console):
an insert, a delete, an update that flips ``closed``. A platform reader's unfiltered
ListAccounts then reads its ``total_size`` in that row, in the page's own statement
(``ListSpec.kept_counts``), instead of counting every row on every first page.

Why triggers and not the service: the count has to move in the same transaction as the
rows it counts, and in every transaction that writes them; a trigger cannot be forgotten
by a new code path, and it rolls back with its transaction.

SQLite: three row triggers (``account_counts_ai``, ``_ad``, ``_au``). Writers are
serialized by the database lock, so ``n = n + 1`` can neither be lost nor deadlock.

PostgreSQL: inserts and deletes are counted by statement triggers over their transition
tables: one ``UPDATE`` of the row per statement, however many rows it writes (COPY
included; the bench seeds with it), and none for a statement that writes no row.
PostgreSQL keeps every version of a row that one transaction writes until it ends, and
each update of the row walks them, so a transaction that updates it k times costs O(k^2):
row triggers would make a 20,000-row ``INSERT`` take 30 s instead of 0.3 s. What remains
is a transaction of many single-row statements (psycopg's ``executemany``): 1,000 of them
cost 0.05 s more, 10,000 1.7 s more; bulk loads should use multi-row statements or COPY.
``closed`` is counted by a row trigger whose ``WHEN`` clause calls nothing unless the row
flips (not for UpdateAccount, nor for activity times: a statement trigger would capture
transition tables for every one of them, about 0.3 ms an update, measured); a CloseAccount
flips one row. ``TRUNCATE`` zeroes both counts.

``UPDATE ... SET n = n + d`` is safe under READ COMMITTED: a concurrent writer waits for
the row's lock and then adds to the committed value, so no update is lost. The lock is held
to commit, so account creates and closes queue on it (they are rare). No deadlock in the
service's writes: in CreateAccount, CloseAccount and bootstrap the count is the last lock
taken (the statement trigger runs after the insert's unique and foreign-key checks, which
may wait for other transactions; the close is their last update of an existing row), and a
transaction holding it waits for no other. Code that writes several existing accounts in
one transaction should do it in one statement, or PostgreSQL may have to break a deadlock.

The counts are initialized from the existing rows under a lock that keeps writers out
(PostgreSQL: ``SHARE ROW EXCLUSIVE`` on ``accounts`` until this transaction commits).

Caveats, for whoever writes a later migration (see also 0002):

- a migration that rebuilds ``accounts`` (Alembic batch mode on SQLite copies the table
  and drops the old one) drops these triggers with it: re-create them with
  :func:`sqlite_ddl` in the same transaction.
- SQLite fires no delete trigger for a row that ``INSERT OR REPLACE`` replaces unless
  ``recursive_triggers`` is on; nothing here writes accounts that way.
- should the row ever be missing, lists count the rows again (the kept count reads as
  NULL); ``RECOUNT`` below recomputes a row that is there from the accounts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: 1 for an open account, 0 for a closed one (the list's ``closed = false``)
_OPEN = "(CASE WHEN {row}.closed THEN 0 ELSE 1 END)"

#: (re)computes the row from the accounts (upgrade; a repair by hand)
RECOUNT = (
    "UPDATE account_counts SET"
    " all_accounts = (SELECT count(*) FROM accounts),"
    " open_accounts = (SELECT count(*) FROM accounts WHERE NOT closed)"
    " WHERE id = 1"
)


def sqlite_ddl() -> list[str]:
    """The SQLite triggers that keep ``account_counts``."""
    new, old = _OPEN.format(row="new"), _OPEN.format(row="old")
    where = "WHERE id = 1"
    return [
        "CREATE TRIGGER account_counts_ai AFTER INSERT ON accounts BEGIN "
        f"UPDATE account_counts SET all_accounts = all_accounts + 1, "
        f"open_accounts = open_accounts + {new} {where}; END",
        "CREATE TRIGGER account_counts_ad AFTER DELETE ON accounts BEGIN "
        f"UPDATE account_counts SET all_accounts = all_accounts - 1, "
        f"open_accounts = open_accounts - {old} {where}; END",
        f"CREATE TRIGGER account_counts_au AFTER UPDATE OF closed ON accounts "
        f"WHEN {old} <> {new} BEGIN "
        f"UPDATE account_counts SET open_accounts = open_accounts + {new} - {old} {where}; END",
    ]


def _plpgsql(name: str, body: str) -> str:
    return (f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n{body}\nRETURN NULL;\nEND\n$$")


def _pg_added(rows: str, sign: str) -> str:
    """One UPDATE of the row by what the transition table ``rows`` holds, if anything."""
    return (
        f"UPDATE account_counts SET all_accounts = all_accounts {sign} d.n, "
        f"open_accounts = open_accounts {sign} d.open "
        f"FROM (SELECT count(*) AS n, count(*) FILTER (WHERE NOT closed) AS open "
        f"FROM {rows}) AS d WHERE account_counts.id = 1 AND d.n > 0;"
    )


#: PostgreSQL: (function, trigger) names, and their definitions
_PG: list[tuple[str, str, str, str]] = [
    (
        "account_counts_inserted", "account_counts_ai",
        _pg_added("new_rows", "+"),
        "AFTER INSERT ON accounts REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT",
    ),
    (
        "account_counts_deleted", "account_counts_ad",
        _pg_added("old_rows", "-"),
        "AFTER DELETE ON accounts REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT",
    ),
    (
        "account_counts_closed", "account_counts_au",
        "UPDATE account_counts SET open_accounts = open_accounts + "
        f"{_OPEN.format(row='NEW')} - {_OPEN.format(row='OLD')} WHERE id = 1;",
        "AFTER UPDATE OF closed ON accounts FOR EACH ROW "
        "WHEN (OLD.closed IS DISTINCT FROM NEW.closed)",
    ),
    (
        "account_counts_truncated", "account_counts_at",
        "UPDATE account_counts SET all_accounts = 0, open_accounts = 0 WHERE id = 1;",
        "AFTER TRUNCATE ON accounts FOR EACH STATEMENT",
    ),
]


def postgresql_ddl() -> list[str]:
    """The PostgreSQL functions and triggers that keep ``account_counts``."""
    out = []
    for function, trigger, body, when in _PG:
        out.append(_plpgsql(function, body))
        out.append(f"CREATE TRIGGER {trigger} {when} EXECUTE FUNCTION {function}()")
    return out


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "account_counts",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("all_accounts", sa.BigInteger(), nullable=False),
        sa.Column("open_accounts", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_account_counts_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_counts")),
    )
    if dialect == "postgresql":
        # no writer of accounts until this transaction commits: the counts below are
        # then those of every row the triggers will not see
        op.execute("LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE")
    op.execute("INSERT INTO account_counts (id, all_accounts, open_accounts) VALUES (1, 0, 0)")
    op.execute(RECOUNT)
    if dialect == "sqlite":
        for stmt in sqlite_ddl():
            op.execute(stmt)
    elif dialect == "postgresql":
        for stmt in postgresql_ddl():
            op.execute(stmt)
    else:  # pragma: no cover - SQLite and PostgreSQL only
        raise NotImplementedError(f"account counts on {dialect}")


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for _function, trigger, _body, _when in _PG:
        if dialect == "sqlite" and trigger == "account_counts_at":
            continue
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}" +
                   (" ON accounts" if dialect == "postgresql" else ""))
    if dialect == "postgresql":
        for function, *_ in _PG:
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.drop_table("account_counts")
