"""SQLAlchemy Core tables: the schema every repository and migration speaks of.

Times are integers: microseconds since the Unix epoch (UTC). They sort, compare and
page the same on SQLite and PostgreSQL, and cost nothing to convert to a Timestamp.
Ids are UUID strings. ``etag`` is a fresh random token on every write (AIP-154).
Lists are JSON arrays (roles, changed fields).
"""

from __future__ import annotations

import re

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = sa.String(36)
TIME = sa.BigInteger
JSONList = sa.JSON


def _times() -> list[sa.Column[int]]:
    return [
        sa.Column("create_time", TIME, nullable=False),
        sa.Column("update_time", TIME, nullable=False),
    ]


accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("email_lower", sa.String(320), nullable=False),
    sa.Column("roles", JSONList, nullable=False),
    sa.Column("consultancy_account_id", ID, sa.ForeignKey("accounts.id"), nullable=True),
    sa.Column("primary_color", sa.String(7), nullable=False, server_default=""),
    sa.Column("secondary_color", sa.String(7), nullable=False, server_default=""),
    sa.Column("logo_url", sa.String(2048), nullable=False, server_default=""),
    sa.Column("closed", sa.Boolean, nullable=False, server_default=sa.false()),
    *_times(),
    sa.Column("activity_time", TIME, nullable=True),
    sa.Column("etag", sa.String(32), nullable=False),
    # Open accounts have unique emails (case-insensitive); a tombstone frees its email.
    sa.Index(
        "uq_accounts_open_email",
        "email_lower",
        unique=True,
        sqlite_where=sa.text("closed = 0"),
        postgresql_where=sa.text("closed = false"),
    ),
    sa.Index("ix_accounts_name_id", "name", "id"),
    sa.Index("ix_accounts_create_time_id", "create_time", "id"),
    sa.Index("ix_accounts_update_time_id", "update_time", "id"),
    sa.Index("ix_accounts_email_lower_id", "email_lower", "id"),
    sa.Index("ix_accounts_consultancy_account_id", "consultancy_account_id"),
)

# How many accounts there are, and how many of them are open: one row (id 1), kept exact
# by triggers on ``accounts`` in the transaction of every write that changes them
# (migration 0007), so that a platform reader's unfiltered ListAccounts reads its
# total_size here instead of counting 100,000 rows. Nothing else writes it.
account_counts = sa.Table(
    "account_counts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("all_accounts", sa.BigInteger, nullable=False),
    sa.Column("open_accounts", sa.BigInteger, nullable=False),
    sa.CheckConstraint("id = 1", name="one_row"),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # HUMAN | EXTERNAL | MACHINE
    sa.Column("email", sa.String(320), nullable=True),
    sa.Column("email_lower", sa.String(320), nullable=True),
    sa.Column("first_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("last_name", sa.String(200), nullable=False, server_default=""),
    # what lists sort and filter on: "first last", else email, external id or client id
    sa.Column("name", sa.String(420), nullable=False, server_default=""),
    sa.Column("external_id", sa.String(200), nullable=True),
    sa.Column("client_id", sa.String(64), nullable=True),
    sa.Column("secret_hash", sa.String(64), nullable=True),  # SHA-256 hex of the client secret
    # bumped by RotateClientSecret; a JWT whose ``gen`` claim differs is revoked (0005)
    sa.Column("credential_generation", sa.Integer, nullable=False, server_default="0"),
    sa.Column("roles", JSONList, nullable=False),
    *_times(),
    sa.Column("etag", sa.String(32), nullable=False),
    sa.Index("uq_users_account_id_email_lower", "account_id", "email_lower", unique=True),
    sa.Index("uq_users_account_id_external_id", "account_id", "external_id", unique=True),
    sa.Index("uq_users_client_id", "client_id", unique=True),
    sa.Index("ix_users_account_id_name_id", "account_id", "name", "id"),
    sa.Index("ix_users_account_id_create_time_id", "account_id", "create_time", "id"),
)

user_groups = sa.Table(
    "user_groups",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.String(2000), nullable=False, server_default=""),
    sa.Column("roles", JSONList, nullable=False),
    *_times(),
    sa.Column("etag", sa.String(32), nullable=False),
    sa.Index("uq_user_groups_account_id_name", "account_id", "name", unique=True),
    sa.Index("ix_user_groups_account_id_create_time_id", "account_id", "create_time", "id"),
)

group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("group_id", ID, sa.ForeignKey("user_groups.id"), primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("create_time", TIME, nullable=False),
    sa.Index("ix_group_members_user_id", "user_id"),
)

partitions = sa.Table(
    "partitions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("description", sa.String(2000), nullable=False, server_default=""),
    *_times(),
    sa.Column("etag", sa.String(32), nullable=False),
    sa.Index("uq_partitions_account_id_name", "account_id", "name", unique=True),
    sa.Index("ix_partitions_account_id_create_time_id", "account_id", "create_time", "id"),
)

group_partitions = sa.Table(
    "group_partitions",
    metadata,
    sa.Column("group_id", ID, sa.ForeignKey("user_groups.id"), primary_key=True),
    sa.Column("partition_id", ID, sa.ForeignKey("partitions.id"), primary_key=True),
    sa.Index("ix_group_partitions_partition_id", "partition_id"),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("partition_id", ID, sa.ForeignKey("partitions.id"), nullable=False),
    sa.Column("device_id", sa.String(8), nullable=True),
    sa.Column("meter_id", sa.String(200), nullable=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    *_times(),
    sa.Column("etag", sa.String(32), nullable=False),
    # unique per account, not platform-wide: a tenant's registry is its own, and no
    # answer to one tenant may depend on another's devices (migration 0006)
    sa.Index("uq_devices_account_id_device_id", "account_id", "device_id", unique=True),
    sa.Index("uq_devices_account_id_meter_id", "account_id", "meter_id", unique=True),
    sa.Index("ix_devices_partition_id_create_time_id", "partition_id", "create_time", "id"),
    sa.Index("ix_devices_account_id_create_time_id", "account_id", "create_time", "id"),
)

device_permissions = sa.Table(
    "device_permissions",
    metadata,
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), primary_key=True),
    sa.Column("device_pk", ID, sa.ForeignKey("devices.id"), primary_key=True),
    sa.Column("id", ID, nullable=False),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("charging", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("create_time", TIME, nullable=False),
    sa.Column("update_time", TIME, nullable=False),
    sa.Column("etag", sa.String(32), nullable=False),
    sa.Index("uq_device_permissions_id", "id", unique=True),
    sa.Index("ix_device_permissions_device_pk", "device_pk"),
    sa.Index("ix_device_permissions_user_id_create_time_id", "user_id", "create_time", "id"),
)

orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("order_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("device_id", sa.String(8), nullable=True),
    sa.Column("tracking_link", sa.String(2048), nullable=True),
    *_times(),
    sa.Column("etag", sa.String(32), nullable=False),
    sa.Index("uq_orders_account_id_order_id", "account_id", "order_id", unique=True),
    sa.Index("ix_orders_user_id_create_time_id", "user_id", "create_time", "id"),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("user_id", ID, sa.ForeignKey("users.id"), nullable=False),
    sa.Column("account_id", ID, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False),  # SHA-256 hex of the token
    sa.Column("user_agent", sa.String(500), nullable=False, server_default=""),
    sa.Column("create_time", TIME, nullable=False),
    sa.Column("update_time", TIME, nullable=False),
    sa.Column("last_activity_time", TIME, nullable=False),
    sa.Column("expire_time", TIME, nullable=False),
    sa.Column("revoke_time", TIME, nullable=True),
    sa.Column("etag", sa.String(32), nullable=False),
    sa.Index("uq_sessions_token_hash", "token_hash", unique=True),
    sa.Index("ix_sessions_user_id_create_time_id", "user_id", "create_time", "id"),
)

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("account_id", ID, nullable=False),  # no FK: the log outlives everything
    sa.Column("actor_user_id", ID, nullable=False, server_default=""),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("resource_type", sa.String(64), nullable=False),
    sa.Column("resource_id", sa.String(64), nullable=False),
    sa.Column("changed_fields", JSONList, nullable=False),
    sa.Column("request_id", sa.String(200), nullable=False, server_default=""),
    sa.Column("create_time", TIME, nullable=False),
    # the change feed's position, increasing in commit order (0009; store/audit.py)
    sa.Column("seq", sa.BigInteger, nullable=True),
    # which tokens the event kills, for most events null (0009; services/events.py)
    sa.Column("revocation", sa.JSON, nullable=True),
    # a change made with a delegated token, or a token exchange: act.sub and sub (0010)
    sa.Column("delegation_actor_user_id", ID, nullable=False, server_default=""),
    sa.Column("delegation_subject_user_id", ID, nullable=False, server_default=""),
    sa.Index("ix_audit_events_account_id_create_time_id", "account_id", "create_time", "id"),
    sa.Index("uq_audit_events_seq", "seq", unique=True),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("public_jwk", sa.JSON, nullable=False),
    # the private key as PKCS#8 PEM, encrypted with the key-encryption key (Fernet token)
    sa.Column("private_key_enc", sa.Text, nullable=False),
    sa.Column("create_time", TIME, nullable=False),
    # when it starts signing (0008): pending (in the JWKS, not signing) until then
    sa.Column("activate_time", TIME, nullable=False),
    # when it stops signing: the next key's activate_time; null while no newer key exists
    sa.Column("retire_time", TIME, nullable=True),
    # it stays in the JWKS until then: retire_time + max_token_lifetime + max_cache_seconds
    # + a margin (auth/keys.py)
    sa.Column("expire_time", TIME, nullable=True),
    # the longest token lifetime (seconds) of any server that may sign with it, and the
    # longest key cache + JWKS max-age of those servers: each raises them to its own
    # before it first signs with the key (0008)
    sa.Column("max_token_lifetime", sa.Integer, nullable=False),
    sa.Column("max_cache_seconds", sa.Integer, nullable=False),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    # SHA-256 of (caller account, method, request_id)
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("method", sa.String(128), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),  # SHA-256 of the request
    sa.Column("result", sa.JSON, nullable=False),  # ids of what the first call created
    sa.Column("create_time", TIME, nullable=False),
    sa.Index("ix_idempotency_keys_create_time", "create_time"),  # expiry (0004)
)

rate_limits = sa.Table(
    "rate_limits",
    metadata,
    # "pair:<id>@<ip>", "client:<id>" or "addr:<ip>" (hashed when long: services/ratelimit)
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("window_start", TIME, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("blocked_until", TIME, nullable=True),
)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic autogenerate's filter: leave alone what migration 0002 makes outside this
    metadata (FTS5 tables and their shadow tables on SQLite, pg_trgm indexes on
    PostgreSQL); they are not ``sa.Table``s, since migrations alone make the schema."""
    if name is None:
        return True
    if type_ == "table":
        return not re.fullmatch(r"\w+_search(_(data|idx|content|docsize|config))?", name)
    if type_ == "index":
        return not name.endswith("_trgm")
    return True
