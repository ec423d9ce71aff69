"""The statements behind services/writes.py and services/common.py, on real databases:
``uow.idempotency`` (request_id keys), ``uow.conflicts`` and store/conflicts.py (lost
races as the caller's errors) and ``uow.authority`` (scope and group-role reads)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from accounts_grpc.domain.errors import AlreadyExists
from accounts_grpc.store import conflicts, errors, idempotency
from accounts_grpc.store.db import Database, new_etag, new_id, now_us
from accounts_grpc.store.tables import accounts

_US = 1_000_000


def _account(conn: sa.Connection, email: str = "") -> str:
    aid, now = new_id(), now_us()
    email = email or f"{aid}@x.io"
    conn.execute(accounts.insert().values(
        id=aid, name="A", email=email, email_lower=email, roles=[],
        consultancy_account_id=None, primary_color="", secondary_color="", logo_url="",
        closed=False, create_time=now, update_time=now, activity_time=None, etag=new_etag()))
    return aid


def test_a_key_is_claimed_once_found_and_forgotten(db: Database) -> None:
    now = now_us()
    with db.write() as uow:
        assert uow.idempotency.find("k") is None
        assert uow.idempotency.claim("k", method="M", fingerprint="f", now=now)
        # taken: reported, and the savepoint leaves the transaction usable
        assert not uow.idempotency.claim("k", method="M", fingerprint="g", now=now)
        with pytest.raises(IntegrityError):
            uow.idempotency.claim("k", method="M", fingerprint="g", now=now,
                              raise_if_taken=True)
        assert uow.idempotency.find("k") == idempotency.StoredKey("f", {}, now)
        uow.idempotency.record_result("k", {"account_id": "a1"})
        uow.commit()
    with db.write() as uow:
        found = uow.idempotency.find("k")
        assert found is not None and found.result == {"account_id": "a1"}
        uow.idempotency.forget("k")
        assert uow.idempotency.find("k") is None
        uow.commit()


def test_prune_deletes_the_oldest_expired_keys_first(db: Database) -> None:
    now = now_us()
    with db.write() as uow:
        for i, age in enumerate((30, 10, 20, 0)):
            uow.idempotency.claim(f"k{i}", method="M", fingerprint="f",
                              now=now - age * _US)
        uow.commit()
    with db.write() as uow:
        assert uow.idempotency.prune(older_than=now - 5 * _US, limit=2) == 2
        assert uow.idempotency.find("k0") is None  # 30 s old
        assert uow.idempotency.find("k2") is None  # 20 s old
        assert uow.idempotency.find("k1") is not None
        assert uow.idempotency.prune(older_than=now - 5 * _US, limit=2) == 1
        assert uow.idempotency.prune(older_than=now - 5 * _US, limit=2) == 0
        assert uow.idempotency.find("k3") is not None  # not expired
        uow.commit()


def test_update_if_etag(db: Database) -> None:
    with db.write() as uow:
        aid = _account(uow.conn)
        etag = uow.conn.execute(sa.select(accounts.c.etag).where(accounts.c.id == aid)).scalar()
        assert etag is not None
        assert conflicts.update_if_etag(uow.conn, accounts, aid, etag, {"name": "B",
                                                                        "etag": "e2"})
        assert not conflicts.update_if_etag(uow.conn, accounts, aid, etag, {"name": "C"})
        assert not conflicts.update_if_etag(uow.conn, accounts, new_id(), "e2", {"name": "C"})
        name = uow.conn.execute(sa.select(accounts.c.name).where(accounts.c.id == aid)).scalar()
        assert name == "B"


def test_a_lost_unique_key_in_a_savepoint_is_the_callers_error(db: Database) -> None:
    with db.write() as uow:
        _account(uow.conn, "taken@x.io")
        seen: list[int] = []

        def lost() -> AlreadyExists:  # called after the savepoint's rollback: it may read
            seen.append(len(uow.conn.execute(sa.select(accounts.c.id)).all()))
            return AlreadyExists("taken", reason="TAKEN")

        with pytest.raises(AlreadyExists), uow.conflicts.savepoint(lost):
            _account(uow.conn, "fresh@x.io")
            _account(uow.conn, "taken@x.io")
        assert seen == [1]  # the savepoint's rows are gone, the transaction goes on
        _account(uow.conn, "other@x.io")
        uow.commit()


def test_only_unique_violations_become_the_callers_error(db: Database) -> None:
    with db.write() as uow:
        _account(uow.conn, "taken@x.io")
        with pytest.raises(AlreadyExists), uow.conflicts.unique_violations_as(
            lambda: AlreadyExists("taken")
        ):
            _account(uow.conn, "taken@x.io")
    with db.write() as uow:
        aid = _account(uow.conn)
        with pytest.raises(IntegrityError), uow.conflicts.unique_violations_as(
            lambda: AlreadyExists("taken")
        ):  # a foreign key, not a unique key
            uow.conn.execute(accounts.update().where(accounts.c.id == aid).values(
                consultancy_account_id=new_id()))


def test_a_database_error_is_described_without_its_values(db: Database) -> None:
    with db.read() as uow, pytest.raises(errors.DatabaseError) as info:
        uow.conn.execute(sa.text("SELECT secret_value FROM no_such_table"))
    text = errors.describe(info.value)
    assert "no_such_table" in text  # the statement, never the message's DETAIL
    assert errors.describe(errors.DatabaseError("x")) == "SQLAlchemyError"


def test_authority_reads(db: Database) -> None:
    with db.write() as uow:
        aid = _account(uow.conn)
        uow.commit()
    with db.read() as uow:
        scope = uow.authority.account_scope(aid)
        assert scope is not None and (scope.id, scope.consultancy_account_id, scope.closed) == (
            aid, None, False)
        assert uow.authority.account_scope(new_id()) is None
        assert uow.authority.user_by_id(new_id()) is None
        assert uow.authority.user_by_external_id(aid, "nobody") is None
        assert uow.authority.group_roles(new_id()) == []
