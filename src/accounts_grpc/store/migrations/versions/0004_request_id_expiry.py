"""request_id expiry: an index on idempotency_keys.create_time

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 02:00:00

Creates forget a request_id after ``--request-id-ttl`` and delete the expired key rows
in bounded batches, oldest first (``services/writes.py``); this index finds them.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_idempotency_keys_create_time", "idempotency_keys", ["create_time"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_create_time", table_name="idempotency_keys")
