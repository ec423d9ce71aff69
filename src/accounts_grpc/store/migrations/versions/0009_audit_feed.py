"""audit feed: a commit-ordered position for every audit event, and its revocation

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 02:00:00

``audit_events`` gains:

- ``seq`` (bigint, unique, null only inside the transaction that writes the event on
  PostgreSQL): the event's position in the change feed (``WatchEvents``). Positions
  increase in commit order (store/audit.py says how, per database). Existing rows are
  numbered 1, 2 ... by ``(create_time, id)``.
- ``revocation`` (JSON, null for most events): which tokens the event kills.

PostgreSQL also gets the sequence ``audit_events_seq`` the positions are drawn from,
started past the existing rows.

Downgrading drops both columns and the sequence.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("revocation", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE audit_events SET seq = numbered.n FROM (SELECT id, row_number() OVER "
        "(ORDER BY create_time, id) AS n FROM audit_events) AS numbered "
        "WHERE audit_events.id = numbered.id"
    )
    op.create_index("uq_audit_events_seq", "audit_events", ["seq"], unique=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE SEQUENCE audit_events_seq")
        op.execute(
            "SELECT setval('audit_events_seq', (SELECT COALESCE(MAX(seq), 0) + 1 "
            "FROM audit_events), false)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE audit_events_seq")
    op.drop_index("uq_audit_events_seq", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("revocation")
        batch.drop_column("seq")
