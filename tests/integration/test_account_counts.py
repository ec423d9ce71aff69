"""The kept account counts (migration 0007) on SQLite and PostgreSQL, and ListAccounts'
total_size built on them.

``account_counts`` must equal ``COUNT(*)`` of every account and of the open ones after
any write: inserts (one row, many rows in one statement, COPY), closes and reopens,
updates that leave ``closed`` alone, deletes, TRUNCATE, rolled-back transactions and
savepoints, concurrent writers (PostgreSQL: no lost update, no deadlock), and after the
migration on a database that already has rows. A platform reader's unfiltered list reads
its total_size there in the page's own statement; every other list still counts, exactly.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts_grpc.domain import roles as R
from accounts_grpc.domain.principal import Principal
from accounts_grpc.services.account_fields import AccountInput, FirstUserInput
from accounts_grpc.services.accounts import AccountsService
from accounts_grpc.store import migrate
from accounts_grpc.store.accounts import ACCOUNTS_LIST, Accounts
from accounts_grpc.store.accounts import EVERY_ACCOUNT as _EVERY_ACCOUNT
from accounts_grpc.store.accounts import OPEN_ACCOUNTS as _OPEN_ACCOUNTS
from accounts_grpc.store.db import Database, create_engine, new_etag, new_id, now_us
from accounts_grpc.store.tables import account_counts, accounts, include_name, metadata

_serial = itertools.count()

HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = create_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def migrated(engine: sa.Engine) -> sa.Engine:
    migrate.upgrade(engine)
    return engine


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    d = Database(db_url, pool_size=4, max_overflow=16)
    migrate.upgrade(d.engine)
    yield d
    d.dispose()


def row(closed: bool = False, **over: Any) -> dict[str, Any]:
    aid = new_id()
    email = f"a{next(_serial)}-{aid[:8]}@x.io"
    values = dict(
        id=aid, name=f"acct {next(_serial)}", email=email, email_lower=email, roles=[],
        consultancy_account_id=None, primary_color="", secondary_color="", logo_url="",
        closed=closed, create_time=now_us() + next(_serial), update_time=0,
        activity_time=None, etag=new_etag(),
    )
    values.update(over)
    return values


def true_counts(conn: sa.Connection) -> tuple[int, int]:
    every = conn.execute(sa.select(sa.func.count()).select_from(accounts)).scalar_one()
    open_ = conn.execute(sa.select(sa.func.count()).select_from(accounts)
                         .where(accounts.c.closed == sa.false())).scalar_one()
    return int(every), int(open_)


def check(engine: sa.Engine) -> tuple[int, int]:
    """The kept counts, as another connection sees them, equal the true counts."""
    with engine.connect() as conn:
        kept, true = Accounts(conn).kept_counts(), true_counts(conn)
    assert kept == true
    return true


# -- every kind of write -------------------------------------------------------------------

OPS = st.sampled_from(["insert", "insert_closed", "insert_many", "close", "reopen", "touch",
                       "same_closed", "delete", "delete_many", "rollback", "savepoint"])


@HYPOTHESIS
@given(steps=st.lists(st.tuples(OPS, st.integers(0, 10**6), st.integers(0, 4)),
                      min_size=1, max_size=25))
def test_kept_counts_equal_count_after_any_writes(
    migrated: sa.Engine, steps: list[tuple[str, int, int]]
) -> None:
    engine = migrated
    with engine.begin() as conn:
        conn.execute(accounts.delete())
    check(engine)
    for op, pick, k in steps:
        with engine.connect() as conn:
            ids = sorted(conn.scalars(sa.select(accounts.c.id)))
            target = ids[pick % len(ids)] if ids else None
            by_id = accounts.c.id == target
            if op == "insert":
                conn.execute(accounts.insert().values(**row()))
            elif op == "insert_closed":
                conn.execute(accounts.insert().values(**row(closed=True)))
            elif op == "insert_many":  # one statement, several rows
                conn.execute(accounts.insert().values([row(closed=i % 2 == 1)
                                                       for i in range(k + 1)]))
            elif op == "close" and target:
                conn.execute(accounts.update().where(by_id).values(closed=True))
            elif op == "reopen" and target:  # (the service never reopens; the count must)
                conn.execute(accounts.update().where(by_id).values(
                    closed=False, email_lower=f"reopened-{uuid.uuid4()}"))
            elif op == "touch":  # every row, closed untouched
                conn.execute(accounts.update().values(update_time=accounts.c.update_time + 1))
            elif op == "same_closed":  # closed written with the value it has
                conn.execute(accounts.update().values(closed=accounts.c.closed))
            elif op == "delete" and target:
                conn.execute(accounts.delete().where(by_id))
            elif op == "delete_many":
                conn.execute(accounts.delete().where(accounts.c.id.in_(ids[:k])))
            elif op == "rollback":
                conn.execute(accounts.insert().values([row(), row(closed=True)]))
                conn.execute(accounts.update().values(closed=True))
                conn.rollback()
                continue
            elif op == "savepoint":
                conn.execute(accounts.insert().values(**row()))
                with contextlib.suppress(RuntimeError), conn.begin_nested():
                    conn.execute(accounts.insert().values(**row()))
                    conn.execute(accounts.delete())
                    raise RuntimeError("roll the savepoint back")
            conn.commit()
        check(engine)


def test_copy_and_truncate_are_counted(migrated: sa.Engine) -> None:
    """PostgreSQL: COPY (the bench seeds with it) and TRUNCATE fire the count's triggers."""
    engine = migrated
    if engine.dialect.name != "postgresql":
        pytest.skip("COPY and TRUNCATE are PostgreSQL's")
    cols = ["id", "name", "email", "email_lower", "roles", "closed", "create_time",
            "update_time", "etag"]
    raw = engine.raw_connection()
    try:
        cur = raw.driver_connection.cursor()  # type: ignore[union-attr]
        with cur.copy(f"COPY accounts ({', '.join(cols)}) FROM STDIN") as copy:
            for i in range(500):
                r = row(closed=i % 5 == 0)
                r["roles"] = "[]"
                copy.write_row([r[c] for c in cols])
        raw.commit()
    finally:
        raw.close()
    assert check(engine) == (500, 400)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE accounts CASCADE")
    assert check(engine) == (0, 0)


# -- concurrency ---------------------------------------------------------------------------


def test_two_open_transactions_lose_no_update(migrated: sa.Engine) -> None:
    """READ COMMITTED (PostgreSQL): the second creator waits for the first's row lock on
    the count, then adds to the committed value. SQLite: writers queue on the database."""
    engine = migrated
    with engine.begin() as conn:
        conn.execute(accounts.insert().values(**row()))
    done = threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with engine.begin() as conn:
                conn.execute(accounts.insert().values(**row(closed=True)))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)
        done.set()

    waited = True
    with engine.connect() as first:  # closed (rolled back) whatever happens
        first.execute(accounts.insert().values(**row()))  # holds the count's row
        if engine.dialect.name == "postgresql":
            t = threading.Thread(target=second)
            t.start()
            waited = not done.wait(0.5)
            first.commit()
            t.join(10)
        else:
            first.commit()  # SQLite: one writer at a time; the second simply follows
            second()
    assert waited, "the second writer did not wait for the first's lock on the count"
    assert done.is_set() and not errors
    assert check(engine) == (3, 2)


def test_concurrent_creates_closes_and_deletes(db: Database) -> None:
    """Many writers at once, each write in its own transaction, as the service makes
    them: the counts come out exact, and nothing deadlocks (PostgreSQL would abort one)."""
    threads, per_thread = 8, 15
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []
    made: list[list[str]] = [[] for _ in range(threads)]

    def work(n: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with db.write() as uow:
                    values = row()
                    uow.conn.execute(accounts.insert().values(**values))
                    uow.commit()
                made[n].append(values["id"])
                if i % 3 == 1:  # close one of this thread's own
                    with db.write() as uow:
                        uow.conn.execute(accounts.update().where(
                            accounts.c.id == made[n][-2]).values(closed=True))
                        uow.commit()
                if i % 5 == 4:
                    with db.write() as uow:
                        uow.conn.execute(accounts.delete().where(
                            accounts.c.id == made[n].pop(0)))
                        uow.commit()
        except BaseException as e:
            errors.append(e)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert not errors, errors
    every, open_ = check(db.engine)
    assert every == threads * (per_thread - per_thread // 5)
    assert open_ < every



def test_service_writes_in_parallel_neither_deadlock_nor_miscount(db: Database) -> None:
    """CreateAccount naming a consultancy (its insert's foreign-key check waits for a
    CloseAccount holding that account) beside CloseAccount of those consultancies (which
    takes the count's lock last): PostgreSQL would abort one of them on a deadlock."""
    from accounts_grpc.domain.errors import InvalidArgument

    with db.write() as uow:
        uow.conn.execute(accounts.insert().values(**row(id=ADMIN_ACCOUNT, name="platform")))
        uow.commit()
    svc = service(db)
    admin = principal(ADMIN_ACCOUNT, R.ADMIN)
    firms = [create(svc, admin, f"firm {i}", roles=(R.CONSULTANCY,)) for i in range(6)]
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def creator(n: int) -> None:
        barrier.wait()
        for i in range(12):
            try:
                create(svc, admin, f"client {n}.{i}", consultancy=firms[(n + i) % len(firms)])
            except InvalidArgument:
                pass  # its consultancy was closed first: refused, as it should be
            except BaseException as e:
                errors.append(e)

    def closer() -> None:
        barrier.wait()
        for firm in firms:
            try:
                svc.close_account(admin, firm)
            except BaseException as e:
                errors.append(e)

    workers = [threading.Thread(target=creator, args=(n,)) for n in range(4)]
    workers.append(threading.Thread(target=closer))
    for t in workers:
        t.start()
    for t in workers:
        t.join(120)
    assert not errors, errors
    every, open_ = check(db.engine)
    assert every - open_ == len(firms)
    assert svc.list_accounts(admin, page_size=1).total_size == open_
    assert svc.list_accounts(admin, page_size=1, show_closed=True).total_size == every

# -- the migration ---------------------------------------------------------------------------


def test_migration_counts_the_rows_already_there(engine: sa.Engine) -> None:
    migrate.upgrade(engine, "0006")
    with engine.begin() as conn:
        conn.execute(accounts.insert().values([row(closed=i % 3 == 0) for i in range(30)]))
    migrate.upgrade(engine, "0007")
    assert check(engine) == (30, 20)
    with engine.begin() as conn:  # and from there the triggers keep them
        conn.execute(accounts.insert().values(**row()))
        conn.execute(accounts.update().where(accounts.c.closed == sa.false())
                     .values(closed=True))
    assert check(engine) == (31, 0)

    # down and up again: rows written while the triggers were gone are counted
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    with engine.connect() as conn:
        assert "account_counts" not in sa.inspect(conn).get_table_names()
    with engine.begin() as conn:
        conn.execute(accounts.insert().values([row(), row(), row(closed=True)]))
    migrate.upgrade(engine)
    assert check(engine) == (34, 2)


def test_the_schema_matches_the_tables(migrated: sa.Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = migrated
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_name": include_name})
        diff = compare_metadata(ctx, metadata)
    assert [d for d in diff if "account_counts" in str(d)] == []
    # one row, and no second one
    with engine.connect() as conn, pytest.raises(sa.exc.IntegrityError):
        conn.execute(account_counts.insert().values(id=2, all_accounts=0, open_accounts=0))


# -- ListAccounts ----------------------------------------------------------------------------

ADMIN_ACCOUNT = "00000000-0000-4000-8000-000000000001"


def principal(account_id: str, *roles: str) -> Principal:
    return Principal(user_id=new_id(), account_id=account_id, kind="HUMAN",
                     roles=frozenset(roles), account_roles=frozenset())


def service(db: Database) -> AccountsService:
    deps = SimpleNamespace(db=db, page_secret=b"p" * 32,
                           settings=SimpleNamespace(request_id_ttl=3600))
    return AccountsService(deps)  # type: ignore[arg-type]


def create(svc: AccountsService, admin: Principal, name: str, *,
           roles: tuple[str, ...] = (), consultancy: str = "") -> str:
    acct, _user = svc.create_account(
        admin,
        AccountInput({"name": name, "email": f"{uuid.uuid4().hex[:12]}@x.io",
                      "roles": list(roles), "consultancy_account_id": consultancy}),
        FirstUserInput(kind="HUMAN", email=f"{uuid.uuid4().hex[:12]}@x.io"),
    )
    return str(acct.id)


@contextlib.contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """The SQL statements the calls inside run (SQLite: as the library runs them, which
    includes those run straight on the DBAPI connection)."""
    seen: list[str] = []
    if db.is_sqlite:
        with db.read(single_statement=True) as uow:  # this thread's connection for list reads
            raw = uow.conn.connection.driver_connection
        assert raw is not None
        raw.set_trace_callback(seen.append)
        try:
            yield seen
        finally:
            raw.set_trace_callback(None)
        return

    def capture(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", capture)


def test_total_size_is_exact_in_every_scope(db: Database) -> None:
    with db.write() as uow:  # the admin's own account, as bootstrap makes it
        uow.conn.execute(accounts.insert().values(**row(id=ADMIN_ACCOUNT, name="platform")))
        uow.commit()
    svc = service(db)
    admin = principal(ADMIN_ACCOUNT, R.ADMIN)
    reader = principal(ADMIN_ACCOUNT, R.ADMIN_READER)
    consultancy = create(svc, admin, "consultancy", roles=(R.CONSULTANCY,))
    consultant = principal(consultancy, R.CONSULTANT)
    clients: list[str] = []

    def expect() -> None:
        with db.read() as uow:
            every, open_ = true_counts(uow.conn)
            named = int(uow.conn.execute(
                sa.select(sa.func.count()).select_from(accounts).where(
                    accounts.c.name.like("%client%"), accounts.c.closed == sa.false())
            ).scalar_one())
            theirs = int(uow.conn.execute(
                sa.select(sa.func.count()).select_from(accounts).where(
                    accounts.c.closed == sa.false(),
                    sa.or_(accounts.c.id == consultancy,
                           accounts.c.consultancy_account_id == consultancy))
            ).scalar_one())
        for who in (admin, reader):
            for size in (1, 2, 1000):  # a first page that holds everything counts nothing
                first = svc.list_accounts(who, page_size=size)
                assert first.total_size == open_
                shown = svc.list_accounts(who, page_size=size, show_closed=True)
                assert shown.total_size == every
                if first.next_page_token:  # carried to the next page
                    nxt = svc.list_accounts(who, page_size=size,
                                            page_token=first.next_page_token)
                    assert nxt.total_size == open_
            assert svc.list_accounts(who, page_size=1, filter="client").total_size == named
        assert svc.list_accounts(consultant, page_size=1).total_size == theirs

    expect()
    for i in range(4):
        clients.append(create(svc, admin, f"client {i}", consultancy=consultancy))
        create(svc, admin, f"other {i}")
        expect()
    svc.close_account(admin, clients[0])
    expect()
    svc.close_account(admin, consultancy)  # its clients lose the link; it is closed
    expect()


def test_an_admins_unfiltered_list_is_one_statement(db: Database) -> None:
    """No count: the page's statement reads the kept count. Other lists still count."""
    with db.write() as uow:
        uow.conn.execute(accounts.insert().values(**row(id=ADMIN_ACCOUNT, name="platform")))
        uow.commit()
    svc = service(db)
    admin = principal(ADMIN_ACCOUNT, R.ADMIN)
    consultancy = create(svc, admin, "consultancy", roles=(R.CONSULTANCY,))
    for i in range(5):
        create(svc, admin, f"client {i}", consultancy=consultancy)

    def selects(seen: list[str]) -> list[str]:
        return [s for s in seen if s.lstrip().upper().startswith("SELECT")]

    for show_closed in (False, True):
        with statements(db) as seen:
            page = svc.list_accounts(admin, page_size=2, show_closed=show_closed)
        assert page.total_size == 7
        assert len(selects(seen)) == 1, seen
        assert "account_counts" in seen[0] and "count(" not in seen[0].lower()
    with statements(db) as seen:
        page = svc.list_accounts(principal(consultancy, R.CONSULTANT), page_size=2)
    assert page.total_size == 6
    assert len(selects(seen)) == 2 and any("count(" in s.lower() for s in seen)
    assert not any("account_counts" in s for s in seen)

    # the kept row gone (it never should be): the list counts the rows instead
    with db.write() as uow:
        uow.conn.execute(account_counts.delete())
        uow.commit()
    with statements(db) as seen:
        assert svc.list_accounts(admin, page_size=2).total_size == 7
        assert svc.list_accounts(admin, page_size=2, show_closed=True).total_size == 7
    assert any("count(" in s.lower() for s in seen)


@pytest.mark.parametrize("order", ["", "create_time desc", "name", "name desc"])
@pytest.mark.parametrize("show_closed", [False, True])
def test_the_first_page_is_read_through_an_index(db: Database, order: str,
                                                 show_closed: bool) -> None:
    """Page 1 walks the order's index and stops after 21 rows: nothing sorts or counts
    the table (the kept count is one row of another)."""
    from accounts_grpc.domain.listing import parse_list_request
    from accounts_grpc.store.listing import filters, run

    with db.write() as uow:
        uow.conn.execute(accounts.insert().values([row(closed=i % 7 == 0)
                                                   for i in range(2000)]))
        uow.commit()
    scope = "all" if show_closed else "unmarked"
    base = _EVERY_ACCOUNT if show_closed else _OPEN_ACCOUNTS
    q = parse_list_request(ACCOUNTS_LIST, secret=b"s", page_size=20, order_by=order)
    index = "ix_accounts_name_id" if order.startswith("name") else "ix_accounts_create_time_id"
    with db.read() as uow:
        dialect = uow.conn.dialect.name
        built = run._statements(ACCOUNTS_LIST, q, base,
                                filters._filter(ACCOUNTS_LIST, (), dialect), dialect,
                                reuse=False, kept=ACCOUNTS_LIST.kept_counts[scope])
        sql = str(built.page.compile(dialect=uow.conn.dialect,
                                     compile_kwargs={"literal_binds": True}))
        if dialect == "sqlite":
            plan = " | ".join(str(r[-1]) for r in uow.conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {sql}"))
            assert f"SCAN accounts USING INDEX {index}" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
        else:
            uow.conn.exec_driver_sql("ANALYZE accounts")
            plan = " | ".join(str(r[0]) for r in uow.conn.exec_driver_sql(
                f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {sql}"))
            assert f"Index Scan Backward using {index}" in plan or \
                f"Index Scan using {index}" in plan, plan
            assert "Sort" not in plan and "Aggregate" not in plan, plan
            assert "accounts (actual rows=21 " in plan, plan  # stopped at a full page
