"""The statements behind services/writes.py and services/common.py, on real databases:
store/idempotency.py (request_id keys), store/conflicts.py (lost races as the caller's
errors) and store/authority.py (scope and group-role reads)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from accounts_grpc.domain.errors import AlreadyExists
from accounts_grpc.store import authority, conflicts, idempotency
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
        assert idempotency.find(uow.conn, "k") is None
        assert idempotency.claim(uow.conn, "k", method="M", fingerprint="f", now=now)
        # taken: reported, and the savepoint leaves the transaction usable
        assert not idempotency.claim(uow.conn, "k", method="M", fingerprint="g", now=now)
        with pytest.raises(IntegrityError):
            idempotency.claim(uow.conn, "k", method="M", fingerprint="g", now=now,
                              raise_if_taken=True)
        assert idempotency.find(uow.conn, "k") == idempotency.StoredKey("f", {}, now)
        idempotency.record_result(uow.conn, "k", {"account_id": "a1"})
        uow.commit()
    with db.write() as uow:
        found = idempotency.find(uow.conn, "k")
        assert found is not None and found.result == {"account_id": "a1"}
        idempotency.forget(uow.conn, "k")
        assert idempotency.find(uow.conn, "k") is None
        uow.commit()


def test_prune_deletes_the_oldest_expired_keys_first(db: Database) -> None:
    now = now_us()
    with db.write() as uow:
        for i, age in enumerate((30, 10, 20, 0)):
            idempotency.claim(uow.conn, f"k{i}", method="M", fingerprint="f",
                              now=now - age * _US)
        uow.commit()
    with db.write() as uow:
        assert idempotency.prune(uow.conn, older_than=now - 5 * _US, limit=2) == 2
        assert idempotency.find(uow.conn, "k0") is None  # 30 s old
        assert idempotency.find(uow.conn, "k2") is None  # 20 s old
        assert idempotency.find(uow.conn, "k1") is not None
        assert idempotency.prune(uow.conn, older_than=now - 5 * _US, limit=2) == 1
        assert idempotency.prune(uow.conn, older_than=now - 5 * _US, limit=2) == 0
        assert idempotency.find(uow.conn, "k3") is not None  # not expired
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

        with pytest.raises(AlreadyExists), conflicts.savepoint(uow.conn, lost):
            _account(uow.conn, "fresh@x.io")
            _account(uow.conn, "taken@x.io")
        assert seen == [1]  # the savepoint's rows are gone, the transaction goes on
        _account(uow.conn, "other@x.io")
        uow.commit()


def test_only_unique_violations_become_the_callers_error(db: Database) -> None:
    with db.write() as uow:
        _account(uow.conn, "taken@x.io")
        with pytest.raises(AlreadyExists), conflicts.unique_violations_as(
            lambda: AlreadyExists("taken")
        ):
            _account(uow.conn, "taken@x.io")
    with db.write() as uow:
        aid = _account(uow.conn)
        with pytest.raises(IntegrityError), conflicts.unique_violations_as(
            lambda: AlreadyExists("taken")
        ):  # a foreign key, not a unique key
            uow.conn.execute(accounts.update().where(accounts.c.id == aid).values(
                consultancy_account_id=new_id()))


def test_a_database_error_is_described_without_its_values(db: Database) -> None:
    with db.read() as conn, pytest.raises(conflicts.DatabaseError) as info:
        conn.execute(sa.text("SELECT secret_value FROM no_such_table"))
    text = conflicts.describe(info.value)
    assert "no_such_table" in text  # the statement, never the message's DETAIL
    assert conflicts.describe(conflicts.DatabaseError("x")) == "SQLAlchemyError"


def test_authority_reads(db: Database) -> None:
    with db.write() as uow:
        aid = _account(uow.conn)
        uow.commit()
    with db.read() as conn:
        scope = authority.account_scope(conn, aid)
        assert scope is not None and (scope.id, scope.consultancy_account_id, scope.closed) == (
            aid, None, False)
        assert authority.account_scope(conn, new_id()) is None
        assert authority.user_by_id(conn, new_id()) is None
        assert authority.user_by_external_id(conn, aid, "nobody") is None
        assert authority.group_roles(conn, new_id()) == []
