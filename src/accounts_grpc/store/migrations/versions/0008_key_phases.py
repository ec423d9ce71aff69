"""key phases: a rotated signing key is published before it signs

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 02:00:00

``signing_keys`` gains:

- ``activate_time`` (not null): when the key starts signing. ``keys rotate`` inserts the
  new key with an activation time a publish lead ahead (pending: in every server's JWKS,
  not signing yet), and sets the previous key's ``retire_time`` to it, so every server
  switches at that instant from the keys it already read (auth/keys.py). Existing rows:
  ``create_time`` (they have all been signing since they were made).
- ``max_token_lifetime`` (seconds, not null): the longest token lifetime of any server
  that may sign with the key; each server raises it to its own before it first signs
  with the key, and a retired key stays in the JWKS until ``retire_time`` plus this plus
  ``max_cache_seconds`` plus a margin. Existing rows: 86400, the default lifetime.
- ``max_cache_seconds`` (not null): the longest key cache plus JWKS max-age of those
  servers; the publish lead of the next rotation is at least this. Existing rows: 90
  (the defaults, 60 + 30).

The columns are added nullable, filled, then made NOT NULL (SQLite: a batch rebuild of
``signing_keys``, which has no triggers or indexes beyond its primary key). No server
default stays behind: the code always writes all three.

Downgrading drops the columns; a server of an older version would then sign at once
with a key that is still pending here (the behaviour this revision removes).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: the defaults of token_lifetime and of key_cache_seconds + jwks_max_age at this revision
DEFAULT_TOKEN_LIFETIME = 86400
DEFAULT_CACHE_SECONDS = 60 + 30


def upgrade() -> None:
    op.add_column("signing_keys", sa.Column("activate_time", sa.BigInteger(), nullable=True))
    op.add_column("signing_keys", sa.Column("max_token_lifetime", sa.Integer(), nullable=True))
    op.add_column("signing_keys", sa.Column("max_cache_seconds", sa.Integer(), nullable=True))
    keys = sa.table(
        "signing_keys",
        sa.column("create_time", sa.BigInteger()),
        sa.column("activate_time", sa.BigInteger()),
        sa.column("max_token_lifetime", sa.Integer()),
        sa.column("max_cache_seconds", sa.Integer()),
    )
    op.execute(
        keys.update().values(
            activate_time=keys.c.create_time,
            max_token_lifetime=DEFAULT_TOKEN_LIFETIME,
            max_cache_seconds=DEFAULT_CACHE_SECONDS,
        )
    )
    with op.batch_alter_table("signing_keys") as batch:
        batch.alter_column("activate_time", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("max_token_lifetime", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("max_cache_seconds", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("signing_keys") as batch:
        batch.drop_column("max_cache_seconds")
        batch.drop_column("max_token_lifetime")
        batch.drop_column("activate_time")
