"""credential generation: a rotated client secret revokes the JWTs issued with the old one

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 00:00:00

``users.credential_generation`` (integer, not null, 0 for every existing user) counts a
user's client-secret rotations. ``CreateToken`` writes it into the JWT as the ``gen``
claim; ``RotateClientSecret`` increments it in the rotation's transaction; and the
authenticator, which reads the user row on every call anyway, rejects a token whose
``gen`` (missing: 0, so tokens issued before this revision keep working) differs from
the row's (UNAUTHENTICATED ``TOKEN_REVOKED``).

Plain ``ADD COLUMN`` / ``DROP COLUMN`` on both databases, deliberately not
``batch_alter_table``: SQLite (3.35 and later) alters the table in place, whereas a
batch "move and copy" would rebuild ``users``, dropping the search triggers of 0002 and
renumbering the rowids its external-content FTS index points at.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("credential_generation", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("users", "credential_generation")
