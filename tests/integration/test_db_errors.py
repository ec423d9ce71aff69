"""Database errors say what failed, never with which values: the engine hides a
statement's parameters, and ``db_error`` (what every log line about a database error
uses) drops the server's message too (PostgreSQL's DETAIL names key values)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import IntegrityError

from accounts_grpc.store.db import Database, now_us
from accounts_grpc.store.errors import db_error
from accounts_grpc.store.tables import rate_limits

SECRET = "token-hash-0123456789abcdef"


def _duplicate(d: Database) -> IntegrityError:
    row = dict(key=SECRET, window_start=now_us(), failures=0, blocked_until=None)
    with d.write() as uow:
        uow.conn.execute(rate_limits.insert().values(**row))
        uow.commit()
    with pytest.raises(IntegrityError) as e, d.write() as uow:
        uow.conn.execute(rate_limits.insert().values(**row))
    return e.value


def test_errors_carry_no_parameters(db: Database) -> None:
    e = _duplicate(db)
    assert "parameters hidden" in str(e)
    described = db_error(e)
    assert SECRET not in described
    assert "INSERT INTO rate_limits" in described
    assert type(e.orig).__name__ in described


def test_the_pipeline_logs_an_unexpected_database_error_without_values(
        db: Database, caplog: pytest.LogCaptureFixture) -> None:
    from accounts_grpc.rpc.pipeline import CallFailed, Pipeline
    from accounts_grpc.rpc.registry import AccessRule

    def handler(_request: object) -> object:
        raise _duplicate(db)

    rules = {"/t.S/M": AccessRule(True, frozenset())}
    pipeline = Pipeline(authenticator=None, rules=rules)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO), pytest.raises(CallFailed) as failed:
        pipeline.call("/t.S/M", None, {}, "ipv4:127.0.0.1:1", "grpc", handler)
    assert failed.value.status.message == "internal error; the server logged the details"
    assert caplog.records, "the error is logged"
    assert all(SECRET not in r.getMessage() for r in caplog.records)
    assert all(r.exc_info is None for r in caplog.records)
