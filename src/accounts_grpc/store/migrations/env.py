"""Alembic environment: run programmatically by ``accounts_grpc.store.migrate``."""

from __future__ import annotations

from alembic import context

from accounts_grpc.store.tables import include_name, metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - always given by store.migrate
    raise RuntimeError("run migrations through `accounts-grpc migrate`")


context.configure(
    connection=connection,
    target_metadata=metadata,
    include_name=include_name,
    render_as_batch=connection.dialect.name == "sqlite",
    version_table_schema=config.attributes.get("schema"),
)
with context.begin_transaction():
    context.run_migrations()
