"""services/writes.py on real databases: idempotent creates, etags, conditional updates,
and the audit event riding in the change's own transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from accounts_grpc.domain.errors import Aborted, InvalidArgument
from accounts_grpc.domain.principal import Principal
from accounts_grpc.services.writes import (
    check_etag,
    conditional_update,
    create_once,
    fingerprint,
    prune_request_ids,
)
from accounts_grpc.store import migrate
from accounts_grpc.store.db import Database, UnitOfWork, new_etag, new_id, now_us
from accounts_grpc.store.tables import accounts, audit_events, idempotency_keys

P = Principal(user_id="u1", account_id="a-platform", kind="MACHINE",
              roles=frozenset({"admin", "member"}), account_roles=frozenset())


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    d = Database(db_url, pool_size=4, max_overflow=16)
    migrate.upgrade(d.engine)
    yield d
    d.dispose()


def _insert_account(uow: UnitOfWork, name: str, *, slow: float = 0.0) -> dict[str, str]:
    aid, now = new_id(), now_us()
    uow.conn.execute(accounts.insert().values(
        id=aid, name=name, email=f"{aid}@x.io", email_lower=f"{aid}@x.io", roles=[],
        consultancy_account_id=None, primary_color="", secondary_color="", logo_url="",
        closed=False, create_time=now, update_time=now, activity_time=None, etag=new_etag()))
    uow.audit.record(account_id=aid, actor_user_id=P.user_id, action="account.create",
                     resource_type="account", resource_id=aid, changed_fields=["name"],
                     request_id="r")
    if slow:
        time.sleep(slow)  # widen the race window
    return {"account_id": aid}


def _load(uow: UnitOfWork, ids: Any) -> Any:
    return uow.conn.execute(sa.select(accounts).where(accounts.c.id == ids["account_id"])).one()


def _count(db: Database, table: sa.Table) -> int:
    with db.read() as uow:
        return int(uow.conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_create_once_returns_the_first_result(db: Database) -> None:
    fp = fingerprint({"name": "A"})
    row, created = create_once(db, P, "Create", "rid-1", fp,
                               lambda uow: _insert_account(uow, "A"), _load)
    assert created
    again, created2 = create_once(db, P, "Create", "rid-1", fp,
                                  lambda uow: _insert_account(uow, "A"), _load)
    assert not created2 and again.id == row.id
    assert _count(db, accounts) == 1 and _count(db, audit_events) == 1


def _age_keys(db: Database, seconds: int) -> None:
    with db.write() as uow:
        uow.conn.execute(idempotency_keys.update().values(
            create_time=idempotency_keys.c.create_time - seconds * 1_000_000))
        uow.commit()


def test_a_request_id_is_forgotten_after_keep(db: Database) -> None:
    fp = fingerprint({"name": "A"})
    first, _ = create_once(db, P, "Create", "rid", fp, lambda u: _insert_account(u, "A"),
                           _load, keep=3600)
    _age_keys(db, 3599)
    again, created = create_once(db, P, "Create", "rid", fp,
                                 lambda u: _insert_account(u, "A"), _load, keep=3600)
    assert not created and again.id == first.id  # still remembered
    _age_keys(db, 2)
    later, created = create_once(db, P, "Create", "rid", fingerprint({"name": "B"}),
                                 lambda u: _insert_account(u, "B"), _load, keep=3600)
    assert created and later.id != first.id  # forgotten: a new request, even another one
    assert _count(db, accounts) == 2 and _count(db, idempotency_keys) == 1


def test_expired_request_ids_are_deleted_in_batches(db: Database,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from accounts_grpc.services import writes

    fp = fingerprint({"name": "A"})
    for i in range(5):
        create_once(db, P, "Create", f"old-{i}", fp, lambda u: _insert_account(u, "A"), _load,
                    keep=3600)
    _age_keys(db, 7200)
    create_once(db, P, "Create", "fresh", fp, lambda u: _insert_account(u, "A"), _load,
                keep=3600)
    assert _count(db, idempotency_keys) == 6  # this process pruned within the minute
    monkeypatch.setattr(writes, "_PRUNE_BATCH", 2)
    assert prune_request_ids(db, 3600, force=True) == 2  # oldest first, a batch at a time
    assert prune_request_ids(db, 3600) == 0  # throttled
    assert prune_request_ids(db, 3600, force=True) == 2
    assert prune_request_ids(db, 3600, force=True) == 1
    assert prune_request_ids(db, 3600, force=True) == 0
    with db.read() as uow:  # the fresh key stays
        assert uow.conn.execute(sa.select(idempotency_keys.c.create_time)).scalar_one() > (
            now_us() - 60 * 1_000_000)


def test_a_failed_prune_does_not_fail_the_create(db: Database,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from accounts_grpc.services import writes

    def locked(*_: Any, **__: Any) -> int:
        raise sa.exc.OperationalError("DELETE ...", {}, Exception("database is locked"))

    monkeypatch.setattr(writes, "prune_request_ids", locked)
    _row, created = create_once(db, P, "Create", "rid", fingerprint("A"),
                               lambda u: _insert_account(u, "A"), _load)
    assert created and _count(db, accounts) == 1 and _count(db, idempotency_keys) == 1


def test_the_key_is_scoped_by_method_and_caller(db: Database) -> None:
    fp = fingerprint({"name": "A"})
    a, _ = create_once(db, P, "Create", "rid", fp, lambda u: _insert_account(u, "A"), _load)
    b, _ = create_once(db, P, "Other", "rid", fp, lambda u: _insert_account(u, "A"), _load)
    other = Principal(user_id="u2", account_id="a-other", kind="HUMAN",
                      roles=frozenset({"admin"}), account_roles=frozenset())
    c, _ = create_once(db, other, "Create", "rid", fp, lambda u: _insert_account(u, "A"),
                       _load)
    assert len({a.id, b.id, c.id}) == 3


def test_same_id_other_request_is_invalid(db: Database) -> None:
    create_once(db, P, "Create", "rid", fingerprint("A"), lambda u: _insert_account(u, "A"),
                _load)
    with pytest.raises(InvalidArgument) as info:
        create_once(db, P, "Create", "rid", fingerprint("B"),
                    lambda u: _insert_account(u, "B"), _load)
    assert info.value.reason == "REQUEST_ID_REUSED"
    assert info.value.violations[0].field == "request_id"
    assert _count(db, accounts) == 1


def test_failed_create_leaves_no_key_and_no_audit(db: Database) -> None:
    def boom(uow: UnitOfWork) -> dict[str, str]:
        _insert_account(uow, "A")
        raise InvalidArgument.field("name", "nope")

    with pytest.raises(InvalidArgument):
        create_once(db, P, "Create", "rid", fingerprint("A"), boom, _load)
    assert _count(db, accounts) == 0 and _count(db, audit_events) == 0
    # the id is free for a corrected retry
    _, created = create_once(db, P, "Create", "rid", fingerprint("A"),
                             lambda u: _insert_account(u, "A"), _load)
    assert created


def test_concurrent_creates_with_one_id_create_one_thing(db: Database) -> None:
    n = 6
    barrier = threading.Barrier(n)
    fp = fingerprint("same")

    def call(_: int) -> tuple[str, bool]:
        barrier.wait()
        row, created = create_once(db, P, "Create", "race", fp,
                                   lambda u: _insert_account(u, "R", slow=0.05), _load)
        return row.id, created

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(call, range(n)))
    assert len({r[0] for r in results}) == 1
    assert sum(r[1] for r in results) == 1
    assert _count(db, accounts) == 1 and _count(db, audit_events) == 1


def test_check_etag() -> None:
    check_etag("", "abc")
    check_etag("abc", "abc")
    with pytest.raises(Aborted) as info:
        check_etag("old", "abc", "account")
    assert info.value.reason == "ETAG_MISMATCH" and info.value.metadata["current_etag"] == "abc"


def test_conditional_update_loses_to_a_concurrent_writer(db: Database) -> None:
    with db.write() as uow:
        ids = _insert_account(uow, "A")
        uow.commit()
    row = _load_now(db, ids)
    with db.write() as uow:
        written = conditional_update(uow.accounts.update_if_etag, row.id, row.etag,
                                     {"name": "B"}, "account")
        uow.commit()
    assert written["etag"] != row.etag and written["update_time"] >= row.update_time
    with db.write() as uow, pytest.raises(Aborted) as info:  # row.etag is stale now
        conditional_update(uow.accounts.update_if_etag, row.id, row.etag, {"name": "C"},
                           "account")
    assert info.value.reason == "ETAG_MISMATCH"
    assert _load_now(db, ids).name == "B"


def test_audit_rolls_back_with_its_change(db: Database) -> None:
    with db.write() as uow:
        _insert_account(uow, "A")
        # no commit
    assert _count(db, accounts) == 0 and _count(db, audit_events) == 0


def test_audit_drops_secret_fields(db: Database) -> None:
    with db.write() as uow:
        uow.audit.record(account_id="a", actor_user_id="u", action="user.create",
                         resource_type="user", resource_id="x",
                         changed_fields=["client_secret", "secret_hash", "name", "token"])
        uow.commit()
    with db.read() as uow:
        fields = uow.conn.execute(sa.select(audit_events.c.changed_fields)).scalar_one()
    assert fields == ["name"]


def _load_now(db: Database, ids: Any) -> Any:
    with db.read() as uow:
        return uow.conn.execute(sa.select(accounts).where(accounts.c.id == ids["account_id"])).one()


def test_a_lost_unique_race_inside_create_is_already_exists(db: Database) -> None:
    from accounts_grpc.domain.errors import AlreadyExists

    with db.write() as uow:
        ids = _insert_account(uow, "A")
        uow.commit()
    taken = _load_now(db, ids).email_lower

    def clash(uow: UnitOfWork) -> dict[str, str]:
        aid, now = new_id(), now_us()
        uow.conn.execute(accounts.insert().values(
            id=aid, name="B", email=taken, email_lower=taken, roles=[],
            consultancy_account_id=None, primary_color="", secondary_color="", logo_url="",
            closed=False, create_time=now, update_time=now, activity_time=None,
            etag=new_etag()))
        return {"account_id": aid}

    with pytest.raises(AlreadyExists):
        create_once(db, P, "Create", "rid-x", fingerprint("B"), clash, _load)
    # and the request id stays free
    _, created = create_once(db, P, "Create", "rid-x", fingerprint("B"),
                             lambda u: _insert_account(u, "B"), _load)
    assert created


def test_other_integrity_errors_are_not_already_exists(db: Database) -> None:
    from sqlalchemy.exc import IntegrityError

    def dangling(uow: UnitOfWork) -> dict[str, str]:
        ids = _insert_account(uow, "C")
        uow.conn.execute(accounts.update().where(accounts.c.id == ids["account_id"]).values(
            consultancy_account_id="00000000-0000-4000-8000-000000000000"))
        return ids

    with pytest.raises(IntegrityError):
        create_once(db, P, "Create", "", fingerprint("C"), dangling, _load)
