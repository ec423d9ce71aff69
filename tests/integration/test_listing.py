"""Keyset paging on real databases (SQLite, and PostgreSQL when configured).

Property: while rows are inserted between page fetches, every row present throughout is
listed exactly once, nothing is listed twice, and the pages follow the requested order;
following ``previous_page_token`` back returns the very pages seen going forward. Each
runs over the three scopes ListAccounts uses (``SCOPES``): on SQLite the last two let the
search index count a filter and choose the page's plan, and both plans must page alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts_grpc.domain.listing import Page, parse_filter, parse_list_request
from accounts_grpc.store import migrate
from accounts_grpc.store.accounts import ACCOUNTS_LIST
from accounts_grpc.store.db import create_engine
from accounts_grpc.store.listing import IndexScope, plans, run_list
from accounts_grpc.store.tables import accounts
from tests.support import backends, database_url

SECRET = b"k" * 32
ORDERS = [
    "",
    "name",
    "name desc",
    "create_time",
    "create_time desc",
    "email",
    "email desc, create_time",
    "name desc, update_time",
    "update_time desc, name",
    "create_time, name desc",
]
FILTERS = ["", "a", '"b"', "x.io", "ab", "abc", "abc x.io"]
# few distinct values, so that sort keys tie often and the id has to break the ties; one
# row in four closed
ROW = st.tuples(st.sampled_from(["a", "b", "ab", "ba", "B", "abc"]), st.integers(0, 4),
                st.integers(0, 3), st.sampled_from([False, False, False, True]))
#: base statement and index scope: any account (no scope given), any account (the index
#: told), the open accounts (the index told: it leaves the closed ones out itself)
SCOPES: list[tuple[bool, IndexScope | None]] = [(True, None), (True, "all"), (False, "unmarked")]
_serial = itertools.count()

HYPOTHESIS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = create_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def insert(conn: sa.Connection, rows: list[tuple[Any, ...]]) -> list[str]:
    """Rows of (name, create_time, update_time[, closed])."""
    ids = []
    for name, ct, ut, *rest in rows:
        closed = bool(rest and rest[0])
        aid = str(uuid.uuid4())
        email = f"{name.lower()}{next(_serial)}@x.io"
        conn.execute(accounts.insert().values(
            id=aid, name=name, email=email, email_lower=email, roles=[],
            consultancy_account_id=None, primary_color="", secondary_color="", logo_url="",
            closed=closed, create_time=ct, update_time=ut, activity_time=None,
            etag=uuid.uuid4().hex))
        ids.append(aid)
    conn.commit()
    return ids


Scope = tuple[bool, IndexScope | None]


def fetch(conn: sa.Connection, token: str, *, order: str, flt: str, size: int,
          scope: Scope = SCOPES[0]) -> Page:
    q = parse_list_request(ACCOUNTS_LIST, secret=SECRET, page_size=size, page_token=token,
                           filter=flt, order_by=order)
    show_closed, index_scope = scope
    base = sa.select(accounts)
    if not show_closed:
        base = base.where(accounts.c.closed == sa.false())
    return run_list(conn, ACCOUNTS_LIST, q, base, index_scope=index_scope)


def ids(page: Page) -> list[str]:
    return [r.id for r in page.rows]


def full_order(conn: sa.Connection, *, order: str, flt: str, scope: Scope = SCOPES[0]
               ) -> list[str]:
    page = fetch(conn, "", order=order, flt=flt, size=1000, scope=scope)
    assert not page.next_page_token
    return ids(page)


def matching(conn: sa.Connection, flt: str, scope: Scope = SCOPES[0]) -> set[str]:
    """The reference: every row, filtered in Python (the index plays no part)."""
    rows = conn.execute(sa.select(accounts.c.id, accounts.c.name, accounts.c.email_lower,
                                  accounts.c.closed))
    terms = parse_filter(flt)
    return {r.id for r in rows
            if (scope[0] or not r.closed)
            and all(t in r.name.lower() or t in r.email_lower for t in terms)}


PLANS = ["hits", "walk", "scan"]


@contextlib.contextmanager
def plan(page: str) -> Iterator[None]:
    """Make every page whose filter the index answers alone take one plan where it can
    (``PagePlan``; walks need a one-field order)."""
    saved = plans._WALK_FACTOR, plans._SCAN_FACTOR
    plans._WALK_FACTOR = 0 if page == "hits" else 10**12
    plans._SCAN_FACTOR = 10**12 if page == "scan" else 0
    try:
        yield
    finally:
        plans._WALK_FACTOR, plans._SCAN_FACTOR = saved


def reset(conn: sa.Connection) -> None:
    conn.execute(accounts.delete())
    conn.commit()


@settings(HYPOTHESIS, max_examples=40)
@given(
    initial=st.lists(ROW, max_size=25),
    inserts=st.lists(st.lists(ROW, max_size=4), max_size=10),
    order=st.sampled_from(ORDERS),
    flt=st.sampled_from(FILTERS),
    size=st.integers(1, 6),
    scope=st.sampled_from(SCOPES),
    page_plan=st.sampled_from(PLANS),
)
def test_no_row_skipped_or_repeated_while_rows_are_inserted(
    engine: sa.Engine, initial: list[Any], inserts: list[list[Any]], order: str, flt: str,
    size: int, scope: Scope, page_plan: str,
) -> None:
    with engine.connect() as conn, plan(page_plan):
        reset(conn)
        insert(conn, initial)
        present = matching(conn, flt, scope)  # present throughout: nothing is deleted
        seen: list[str] = []
        token = ""
        for step in range(500):
            page = fetch(conn, token, order=order, flt=flt, size=size, scope=scope)
            assert len(page.rows) <= size
            # counted once, with the first page, and carried in the tokens
            assert page.total_size == len(present)
            assert bool(page.previous_page_token) == (step > 0)
            seen.extend(ids(page))
            token = page.next_page_token
            if not token:
                break
            if step < len(inserts):
                insert(conn, inserts[step])
        else:
            pytest.fail("paging did not end")
        assert len(seen) == len(set(seen)), "a row was listed twice"
        assert present <= set(seen), f"skipped: {present - set(seen)}"
        # the pages, concatenated, follow the order the database gives the whole list
        final = full_order(conn, order=order, flt=flt, scope=scope)
        pos = [final.index(i) for i in seen]
        assert pos == sorted(pos)


@settings(HYPOTHESIS, max_examples=30)
@given(
    initial=st.lists(ROW, max_size=30),
    order=st.sampled_from(ORDERS),
    flt=st.sampled_from(FILTERS),
    size=st.integers(1, 5),
    scope=st.sampled_from(SCOPES),
    page_plan=st.sampled_from(PLANS),
)
def test_backwards_paging_returns_the_same_pages(
    engine: sa.Engine, initial: list[Any], order: str, flt: str, size: int, scope: Scope,
    page_plan: str,
) -> None:
    with engine.connect() as conn, plan(page_plan):
        reset(conn)
        insert(conn, initial)
        forward: list[Page] = [fetch(conn, "", order=order, flt=flt, size=size, scope=scope)]
        assert forward[0].total_size == len(matching(conn, flt, scope))
        while forward[-1].next_page_token:
            forward.append(fetch(conn, forward[-1].next_page_token, order=order, flt=flt,
                                 size=size, scope=scope))
            assert len(forward) < 100
        assert forward[0].previous_page_token == ""
        # walk back from the last page to the first
        page = forward[-1]
        for i in range(len(forward) - 2, -1, -1):
            assert page.previous_page_token, f"page {i + 1} has no previous_page_token"
            page = fetch(conn, page.previous_page_token, order=order, flt=flt, size=size,
                         scope=scope)
            assert ids(page) == ids(forward[i]), f"page {i} differs going back"
            # and forward again from a page reached backwards
            if page.next_page_token:
                again = fetch(conn, page.next_page_token, order=order, flt=flt, size=size,
                              scope=scope)
                assert ids(again) == ids(forward[i + 1])
        assert page.previous_page_token == ""


def test_page_past_the_end_lets_the_client_step_back(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        reset(conn)
        made = insert(conn, [("a", i, 0) for i in range(5)])
        first = fetch(conn, "", order="create_time", flt="", size=3)
        assert ids(first) == made[:3]
        conn.execute(accounts.delete().where(accounts.c.id.in_(made[3:])))
        conn.commit()
        past = fetch(conn, first.next_page_token, order="create_time", flt="", size=3)
        assert past.rows == [] and past.next_page_token == ""
        back = fetch(conn, past.previous_page_token, order="create_time", flt="", size=3)
        assert ids(back) == made[:3]
        # everything before the cursor deleted: stepping back lands on the first page
        conn.execute(accounts.delete().where(accounts.c.id.in_(made[:3])))
        insert(conn, [("z", 9, 0)])
        again = fetch(conn, back.next_page_token, order="create_time", flt="", size=3)
        assert [r.name for r in again.rows] == ["z"]
        first_again = fetch(conn, again.previous_page_token, order="create_time", flt="", size=3)
        assert [r.name for r in first_again.rows] == ["z"]
        assert first_again.previous_page_token == ""


def test_filter_is_case_insensitive_and_literal(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        reset(conn)
        insert(conn, [("Acme Corp", 1, 0), ("acme", 2, 0), ("50% off_sale", 3, 0),
                      ("5000 offxsale", 4, 0)])

        def names(flt: str) -> list[str]:
            return [r.name for r in fetch(conn, "", order="create_time", flt=flt, size=50).rows]

        assert names("ACME") == ["Acme Corp", "acme"]
        assert names('"acme corp"') == ["Acme Corp"]
        assert names("corp acme") == ["Acme Corp"]
        assert names('"corp acme"') == []
        assert names("50%") == ["50% off_sale"]
        assert names("off_sale") == ["50% off_sale"]
        assert names("x.io") == ["Acme Corp", "acme", "50% off_sale", "5000 offxsale"]  # email
        assert names("nothing") == []


def test_count_runs_once_per_query_not_per_page(engine: sa.Engine) -> None:
    statements: list[str] = []

    def capture(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    with engine.connect() as conn:
        reset(conn)
        insert(conn, [("a", i, 0) for i in range(7)])
        sa.event.listen(engine, "before_cursor_execute", capture)
        try:
            first = fetch(conn, "", order="name", flt="", size=3)
            assert first.total_size == 7 and len(statements) == 2  # the page and the count
            statements.clear()
            second = fetch(conn, first.next_page_token, order="name", flt="", size=3)
            assert second.total_size == 7 and len(statements) == 1  # the page alone
            statements.clear()
            back = fetch(conn, second.previous_page_token, order="name", flt="", size=3)
            assert back.total_size == 7 and len(statements) == 1
            statements.clear()
            whole = fetch(conn, "", order="name", flt="", size=50)
            assert whole.total_size == 7 and len(statements) == 1  # all on page 1: no count
        finally:
            sa.event.remove(engine, "before_cursor_execute", capture)


def test_non_ascii_filter_terms(engine: sa.Engine) -> None:
    """Case is ignored for ASCII on every backend; other letters match as written."""
    with engine.connect() as conn:
        reset(conn)
        insert(conn, [("Café Zürich", 1, 0)])
        found = fetch(conn, "", order="", flt="café zürich", size=5)
        assert [r.name for r in found.rows] == ["Café Zürich"]
        assert fetch(conn, "", order="", flt="CAFÉ", size=5).total_size == 1


@pytest.mark.parametrize("page_plan", PLANS)
def test_every_plan_pages_like_the_reference(engine: sa.Engine, page_plan: str) -> None:
    """Every page of an index-counted filter, under each plan, against Python's sort."""
    # non-ASCII names too: SQLite's BINARY collation of UTF-8 orders as code points do,
    # which the page packed into one JSON value (SQLite) is sorted again by
    names = ["abc", "Abc d", "b", "ab", "xabcx", "c", "Ärger abc", "日本 abc", "zoë"]
    rows = [(names[i % len(names)], i % 7, i % 5, i % 4 == 1) for i in range(60)]
    keys = {"name": "name", "create_time": "create_time", "email": "email_lower"}
    with engine.connect() as conn, plan(page_plan):
        reset(conn)
        insert(conn, rows)
        table = {r.id: r for r in conn.execute(sa.select(accounts))}
        for scope in SCOPES[1:]:
            for flt in ("x.io", "abc", "abc x.io", "zzz"):
                present = matching(conn, flt, scope)
                for order in ("name", "create_time desc", "email"):
                    field, _, desc = order.partition(" ")
                    want = sorted(present, key=lambda i: (getattr(table[i], keys[field]), i),
                                  reverse=bool(desc))
                    for size in (1, 4, 7):
                        seen: list[str] = []
                        token = ""
                        while True:
                            page = fetch(conn, token, order=order, flt=flt, size=size,
                                         scope=scope)
                            assert page.total_size == len(present)
                            seen.extend(ids(page))
                            token = page.next_page_token
                            if not token:
                                break
                        assert seen == want, (scope, flt, order, size)


@pytest.mark.skipif(len(backends()) < 2, reason="needs both databases (PostgreSQL configured)")
def test_statements_kept_for_one_database_are_not_used_on_another(tmp_path: Path) -> None:
    """One base statement, one shape of request, two dialects: a filter is spelled per
    dialect (SQLite LIKE, PostgreSQL ILIKE), so each gets statements of its own."""
    spec = dataclasses.replace(ACCOUNTS_LIST, search=None)  # LIKE on both
    base = sa.select(accounts).where(accounts.c.closed == sa.bindparam("closed"))
    for backend in backends():
        with database_url(backend, tmp_path / backend) as url:
            eng = create_engine(url)
            try:
                migrate.upgrade(eng)
                with eng.connect() as conn:
                    for name in ("MiXed", "other"):
                        conn.execute(accounts.insert().values(
                            id=str(uuid.uuid4()), name=name, email="e",
                            email_lower=str(uuid.uuid4()), roles=[], closed=False, create_time=1,
                            update_time=0, etag="e"))
                    q = parse_list_request(spec, secret=SECRET, page_size=5, filter="mix")
                    page = run_list(conn, spec, q, base, params={"closed": False})
                    assert [r.name for r in page.rows] == ["MiXed"], backend
            finally:
                eng.dispose()



def kept_fetch(conn: sa.Connection, token: str, *, order: str, flt: str, size: int,
               show_closed: bool) -> Page:
    """As ListAccounts lists for an admin: on its base statements made once (``params``),
    so that what is built on them is kept (SQLite: run straight on the DBAPI cursor), and
    an unfiltered list reads its total in the kept count (migration 0007)."""
    from accounts_grpc.store.accounts import EVERY_ACCOUNT as _EVERY_ACCOUNT
    from accounts_grpc.store.accounts import OPEN_ACCOUNTS as _OPEN_ACCOUNTS

    q = parse_list_request(ACCOUNTS_LIST, secret=SECRET, page_size=size, page_token=token,
                           filter=flt, order_by=order)
    return run_list(conn, ACCOUNTS_LIST, q, _EVERY_ACCOUNT if show_closed else _OPEN_ACCOUNTS,
                    params={"own": "-"}, index_scope="all" if show_closed else "unmarked")


def test_kept_statements_page_like_fresh_ones(engine: sa.Engine) -> None:
    """Forward and back, every page and total_size of ``kept_fetch`` is what the same list
    built afresh, with a count, gives."""
    rows = [(["a", "b", "ab", "ba", "B", "abc"][i % 6], i % 5, i % 3, i % 4 == 1)
            for i in range(40)]
    with engine.connect() as conn:
        reset(conn)
        insert(conn, rows)
        for show_closed, order, flt, size in itertools.product(
                [True, False], ["", "name desc", "email, create_time"], ["", "ab", "x.io"],
                [1, 7]):
            args = dict(order=order, flt=flt, size=size)
            want = len(matching(conn, flt, (show_closed, None)))
            a = kept_fetch(conn, "", show_closed=show_closed, **args)  # type: ignore[arg-type]
            b = fetch(conn, "", scope=(show_closed, None), **args)  # type: ignore[arg-type]
            forward = True
            for _ in range(100):
                assert ids(a) == ids(b), (show_closed, order, flt, size)
                assert a.total_size == b.total_size == want
                assert bool(a.next_page_token) == bool(b.next_page_token)
                assert bool(a.previous_page_token) == bool(b.previous_page_token)
                forward = forward and bool(a.next_page_token)
                ta, tb = ((a.next_page_token, b.next_page_token) if forward
                          else (a.previous_page_token, b.previous_page_token))
                if not ta:
                    break  # back on the first page
                a = kept_fetch(conn, ta, show_closed=show_closed, **args)  # type: ignore[arg-type]
                b = fetch(conn, tb, scope=(show_closed, None), **args)  # type: ignore[arg-type]
            else:
                pytest.fail("paging did not end")
