"""Schema management: Alembic migrations are the only way a schema is made."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from accounts_grpc.config import StartupError
from accounts_grpc.store.db import startup_reason, unreachable

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current(engine: Engine) -> str | None:
    """The schema's revision (None: empty). The first thing a command asks a database:
    one it cannot connect to is a StartupError naming --database-url."""
    try:
        conn = engine.connect()
    except DBAPIError as e:
        raise unreachable(engine, e) from None
    with conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to ``revision``; a database that refuses (it cannot be reached, the user
    may not create tables) is a StartupError naming --database-url."""
    cfg = alembic_config()
    try:
        conn = engine.connect()
    except DBAPIError as e:
        raise unreachable(engine, e) from None
    try:
        with conn, conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except DBAPIError as e:
        url = engine.url.render_as_string(hide_password=True)
        raise StartupError("database_url", f"cannot migrate the schema of {url} to "
                           f"{revision}: {startup_reason(e, first_line=True)}") from None


def is_current(engine: Engine) -> bool:
    return current(engine) == head()


def revision(engine: Engine, message: str) -> None:
    """Autogenerate a new revision from the tables (developers only)."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)
