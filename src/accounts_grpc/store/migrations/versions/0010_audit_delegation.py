"""audit delegation: the actor and subject of a delegated token (RFC 8693) on events

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 03:00:00

``audit_events`` gains ``delegation_actor_user_id`` and ``delegation_subject_user_id``
(not null, default ""): for a change made with a delegated token (ExchangeToken), and
for a token exchange, the token's ``act.sub`` and ``sub``. Existing rows: "" (no event
before this revision was made with one).

Downgrading drops both columns (the events stay, without who delegated).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_COLUMNS = ("delegation_actor_user_id", "delegation_subject_user_id")


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.String(36), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
