"""The database's failures, named for what the layers above the store do about them, so
that they catch them without importing SQLAlchemy (the store is the only package that
does). Most specific first, as an ``except`` chain must test them:

- ``ValueRefused``: the driver or the database refused a value (out of range, a NUL
  character on PostgreSQL): the caller's mistake.
- ``PoolExhausted``: no pooled connection came free within ``db_pool_timeout``.
- ``DatabaseUnavailable``: the database is down, restarting or refusing connections.
- ``DatabaseError``: any other error a statement raised (``SQLAlchemyError``).

And for a use case that runs its whole transaction again when a concurrent writer spoiled
it: ``ConstraintViolation``, what a statement or the commit raises when it would break a
constraint (unique key, foreign key, NOT NULL, CHECK); ``is_unique_violation`` tells a
unique key's. store/conflicts.py maps unique-key violations to the caller's error instead
(``unique_violations_as``, ``savepoint``).

``describe(e)`` is the one way to put any of them in a log line: class, SQLSTATE and
statement, never the message or the parameters (a server's DETAIL names key values:
emails, token hashes).
"""

from __future__ import annotations

from sqlalchemy import exc as _exc

__all__ = ["ConstraintViolation", "DatabaseError", "DatabaseUnavailable", "PoolExhausted",
           "ValueRefused", "db_error", "describe", "is_unique_violation"]

ValueRefused = _exc.DataError
PoolExhausted = _exc.TimeoutError
DatabaseUnavailable = _exc.OperationalError
DatabaseError = _exc.SQLAlchemyError
ConstraintViolation = _exc.IntegrityError


def describe(e: BaseException) -> str:
    """``e`` for a log line (see the module docstring)."""
    return db_error(e) if isinstance(e, _exc.DBAPIError) else type(e).__name__


def db_error(e: _exc.DBAPIError) -> str:
    """A database error for the log: its class, SQLSTATE and statement, never its
    message (a server's DETAIL names key values: emails, token hashes) nor its
    parameters."""
    orig = e.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
    statement = " ".join((e.statement or "").split())[:300]
    return f"{type(orig).__name__} ({sqlstate or 'no SQLSTATE'}) in: {statement}"


def is_unique_violation(e: _exc.IntegrityError) -> bool:
    """True if ``e`` is a unique-key violation (not a foreign key, NOT NULL or CHECK)."""
    state = getattr(e.orig, "sqlstate", None)  # psycopg 3
    if state:
        return bool(state == "23505")
    return "UNIQUE constraint failed" in str(e.orig)  # sqlite3
