"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 21:56:58.555749
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("email_lower", sa.String(length=320), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("consultancy_account_id", sa.String(length=36), nullable=True),
        sa.Column("primary_color", sa.String(length=7), server_default="", nullable=False),
        sa.Column("secondary_color", sa.String(length=7), server_default="", nullable=False),
        sa.Column("logo_url", sa.String(length=2048), server_default="", nullable=False),
        sa.Column("closed", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("activity_time", sa.BigInteger(), nullable=True),
        sa.Column("etag", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["consultancy_account_id"],
            ["accounts.id"],
            name=op.f("fk_accounts_consultancy_account_id_accounts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_accounts_consultancy_account_id", ["consultancy_account_id"], unique=False
        )
        batch_op.create_index("ix_accounts_create_time_id", ["create_time", "id"], unique=False)
        batch_op.create_index("ix_accounts_email_lower_id", ["email_lower", "id"], unique=False)
        batch_op.create_index("ix_accounts_name_id", ["name", "id"], unique=False)
        batch_op.create_index("ix_accounts_update_time_id", ["update_time", "id"], unique=False)
        batch_op.create_index(
            "uq_accounts_open_email",
            ["email_lower"],
            unique=True,
            sqlite_where=sa.text("closed = 0"),
            postgresql_where=sa.text("closed = false"),
        )

    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("actor_user_id", sa.String(length=36), server_default="", nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("changed_fields", sa.JSON(), nullable=False),
        sa.Column("request_id", sa.String(length=200), server_default="", nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_audit_events_account_id_create_time_id",
            ["account_id", "create_time", "id"],
            unique=False,
        )

    op.create_table(
        "idempotency_keys",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("blocked_until", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limits")),
    )
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("alg", sa.String(length=16), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("private_key_enc", sa.Text(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("retire_time", sa.BigInteger(), nullable=True),
        sa.Column("expire_time", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_signing_keys")),
    )
    op.create_table(
        "partitions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), server_default="", nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_partitions_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partitions")),
    )
    with op.batch_alter_table("partitions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_partitions_account_id_create_time_id",
            ["account_id", "create_time", "id"],
            unique=False,
        )
        batch_op.create_index("uq_partitions_account_id_name", ["account_id", "name"], unique=True)

    op.create_table(
        "user_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), server_default="", nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_user_groups_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_groups")),
    )
    with op.batch_alter_table("user_groups", schema=None) as batch_op:
        batch_op.create_index(
            "ix_user_groups_account_id_create_time_id",
            ["account_id", "create_time", "id"],
            unique=False,
        )
        batch_op.create_index("uq_user_groups_account_id_name", ["account_id", "name"], unique=True)

    op.create_table(
        "users",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("email_lower", sa.String(length=320), nullable=True),
        sa.Column("first_name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("last_name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("name", sa.String(length=420), server_default="", nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=True),
        sa.Column("secret_hash", sa.String(length=64), nullable=True),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_users_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(
            "ix_users_account_id_create_time_id", ["account_id", "create_time", "id"], unique=False
        )
        batch_op.create_index(
            "ix_users_account_id_name_id", ["account_id", "name", "id"], unique=False
        )
        batch_op.create_index(
            "uq_users_account_id_email_lower", ["account_id", "email_lower"], unique=True
        )
        batch_op.create_index(
            "uq_users_account_id_external_id", ["account_id", "external_id"], unique=True
        )
        batch_op.create_index("uq_users_client_id", ["client_id"], unique=True)

    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("partition_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.String(length=8), nullable=True),
        sa.Column("meter_id", sa.String(length=200), nullable=True),
        sa.Column("name", sa.String(length=200), server_default="", nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_devices_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["partition_id"], ["partitions.id"], name=op.f("fk_devices_partition_id_partitions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index(
            "ix_devices_account_id_create_time_id",
            ["account_id", "create_time", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_devices_partition_id_create_time_id",
            ["partition_id", "create_time", "id"],
            unique=False,
        )
        batch_op.create_index("uq_devices_device_id", ["device_id"], unique=True)
        batch_op.create_index("uq_devices_meter_id", ["meter_id"], unique=True)

    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["user_groups.id"], name=op.f("fk_group_members_group_id_user_groups")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_group_members_user_id_users")
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_group_members")),
    )
    with op.batch_alter_table("group_members", schema=None) as batch_op:
        batch_op.create_index("ix_group_members_user_id", ["user_id"], unique=False)

    op.create_table(
        "group_partitions",
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("partition_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"], ["user_groups.id"], name=op.f("fk_group_partitions_group_id_user_groups")
        ),
        sa.ForeignKeyConstraint(
            ["partition_id"],
            ["partitions.id"],
            name=op.f("fk_group_partitions_partition_id_partitions"),
        ),
        sa.PrimaryKeyConstraint("group_id", "partition_id", name=op.f("pk_group_partitions")),
    )
    with op.batch_alter_table("group_partitions", schema=None) as batch_op:
        batch_op.create_index("ix_group_partitions_partition_id", ["partition_id"], unique=False)

    op.create_table(
        "orders",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("order_id", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("device_id", sa.String(length=8), nullable=True),
        sa.Column("tracking_link", sa.String(length=2048), nullable=True),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_orders_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_orders_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_orders_user_id_create_time_id", ["user_id", "create_time", "id"], unique=False
        )
        batch_op.create_index(
            "uq_orders_account_id_order_id", ["account_id", "order_id"], unique=True
        )

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=500), server_default="", nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("last_activity_time", sa.BigInteger(), nullable=False),
        sa.Column("expire_time", sa.BigInteger(), nullable=False),
        sa.Column("revoke_time", sa.BigInteger(), nullable=True),
        sa.Column("etag", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_sessions_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sessions_user_id_create_time_id", ["user_id", "create_time", "id"], unique=False
        )
        batch_op.create_index("uq_sessions_token_hash", ["token_hash"], unique=True)

    op.create_table(
        "device_permissions",
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("device_pk", sa.String(length=36), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("charging", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("create_time", sa.BigInteger(), nullable=False),
        sa.Column("update_time", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_device_permissions_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["device_pk"], ["devices.id"], name=op.f("fk_device_permissions_device_pk_devices")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_device_permissions_user_id_users")
        ),
        sa.PrimaryKeyConstraint("user_id", "device_pk", name=op.f("pk_device_permissions")),
    )
    with op.batch_alter_table("device_permissions", schema=None) as batch_op:
        batch_op.create_index("ix_device_permissions_device_pk", ["device_pk"], unique=False)
        batch_op.create_index(
            "ix_device_permissions_user_id_create_time_id",
            ["user_id", "create_time", "id"],
            unique=False,
        )
        batch_op.create_index("uq_device_permissions_id", ["id"], unique=True)


def downgrade() -> None:

    with op.batch_alter_table("device_permissions", schema=None) as batch_op:
        batch_op.drop_index("uq_device_permissions_id")
        batch_op.drop_index("ix_device_permissions_user_id_create_time_id")
        batch_op.drop_index("ix_device_permissions_device_pk")

    op.drop_table("device_permissions")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index("uq_sessions_token_hash")
        batch_op.drop_index("ix_sessions_user_id_create_time_id")

    op.drop_table("sessions")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("uq_orders_account_id_order_id")
        batch_op.drop_index("ix_orders_user_id_create_time_id")

    op.drop_table("orders")
    with op.batch_alter_table("group_partitions", schema=None) as batch_op:
        batch_op.drop_index("ix_group_partitions_partition_id")

    op.drop_table("group_partitions")
    with op.batch_alter_table("group_members", schema=None) as batch_op:
        batch_op.drop_index("ix_group_members_user_id")

    op.drop_table("group_members")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("uq_devices_meter_id")
        batch_op.drop_index("uq_devices_device_id")
        batch_op.drop_index("ix_devices_partition_id_create_time_id")
        batch_op.drop_index("ix_devices_account_id_create_time_id")

    op.drop_table("devices")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index("uq_users_client_id")
        batch_op.drop_index("uq_users_account_id_external_id")
        batch_op.drop_index("uq_users_account_id_email_lower")
        batch_op.drop_index("ix_users_account_id_name_id")
        batch_op.drop_index("ix_users_account_id_create_time_id")

    op.drop_table("users")
    with op.batch_alter_table("user_groups", schema=None) as batch_op:
        batch_op.drop_index("uq_user_groups_account_id_name")
        batch_op.drop_index("ix_user_groups_account_id_create_time_id")

    op.drop_table("user_groups")
    with op.batch_alter_table("partitions", schema=None) as batch_op:
        batch_op.drop_index("uq_partitions_account_id_name")
        batch_op.drop_index("ix_partitions_account_id_create_time_id")

    op.drop_table("partitions")
    op.drop_table("signing_keys")
    op.drop_table("rate_limits")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_account_id_create_time_id")

    op.drop_table("audit_events")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_accounts_open_email",
            sqlite_where=sa.text("closed = 0"),
            postgresql_where=sa.text("closed = false"),
        )
        batch_op.drop_index("ix_accounts_update_time_id")
        batch_op.drop_index("ix_accounts_name_id")
        batch_op.drop_index("ix_accounts_email_lower_id")
        batch_op.drop_index("ix_accounts_create_time_id")
        batch_op.drop_index("ix_accounts_consultancy_account_id")

    op.drop_table("accounts")
