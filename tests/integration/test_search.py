"""Free-text list filters served by an index (migrations 0002, 0003), on SQLite and PostgreSQL.

The indexed filter must return exactly the rows a plain Python reference of the
semantics returns: every term, case-folded, a substring of some searchable column,
case-folded. On SQLite the folding is FTS5's (terms of 3+ characters go through the
trigram index, shorter ones through LIKE over every spelling that folds alike); on
PostgreSQL it is ILIKE's, served by pg_trgm indexes. Rows are changed and deleted between
checks, so the sync triggers are tested as well.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Sequence

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts_grpc.domain.listing import parse_list_request
from accounts_grpc.store import migrate
from accounts_grpc.store.accounts import ACCOUNTS_LIST
from accounts_grpc.store.db import create_engine
from accounts_grpc.store.listing import filter_clause, filters, plans, run_list
from accounts_grpc.store.tables import accounts, users
from accounts_grpc.store.users import USER_LIST

HYPOTHESIS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# characters that stress both paths: LIKE and FTS5 syntax, ASCII case, Unicode case and
# its odd corners (Kelvin sign, long s, final sigma, dotted/dotless i, sharp s, micro)
UNICODE = "aAbBsSkK%_\\\"'* .:@-{}()^+éÉß\u017f\u212a\u03c3\u03c2\u03a3\u0130\u0131\u00b5μÅåøØ日€"
ASCII = "aAbBsSkK%_\\\"'* .:@-{}()^+日€"  # PostgreSQL: ILIKE's folding depends on the locale
_serial = itertools.count()


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = create_engine(db_url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


def alphabet(engine: sa.Engine) -> str:
    return UNICODE if engine.dialect.name == "sqlite" else ASCII


def fold(engine: sa.Engine, text: str) -> str:
    if engine.dialect.name == "sqlite":
        return "".join(filters._fts_fold_char(c) for c in text)
    return text.lower()


def reference(engine: sa.Engine, rows: dict[str, Sequence[str | None]],
              terms: Sequence[str]) -> set[str]:
    return {
        rid for rid, values in rows.items()
        if all(any(v is not None and fold(engine, t) in fold(engine, v) for v in values)
               for t in terms)
    }


def insert_account(conn: sa.Connection, name: str, email: str, closed: bool = False) -> str:
    """(Closed accounts may share an email: the random ones are closed.)"""
    aid = str(uuid.uuid4())
    conn.execute(accounts.insert().values(
        id=aid, name=name, email=email, email_lower=email, roles=[],
        consultancy_account_id=None, closed=closed, create_time=next(_serial),
        update_time=0, etag="e"))
    return aid


def matching(conn: sa.Connection, terms: Sequence[str], *, open_only: bool = False) -> set[str]:
    """The ids the filter selects. ``open_only``: as a platform reader's list of the open
    accounts asks (``index_scope="unmarked"``); the base condition on ``closed`` is left
    out when the index answers alone, so that its marks are what is tested."""
    dialect = conn.dialect.name
    clause = filter_clause(ACCOUNTS_LIST, terms, dialect,
                           index_scope="unmarked" if open_only else None)
    assert clause is not None
    stmt = sa.select(accounts.c.id).where(clause)
    indexed_alone = dialect == "sqlite" and all(len(t) >= 3 and "\x00" not in t for t in terms)
    if open_only and not indexed_alone:
        stmt = stmt.where(accounts.c.closed == sa.false())
    return set(conn.scalars(stmt))


def check_index(conn: sa.Connection) -> None:
    if conn.dialect.name == "sqlite":  # the FTS index agrees with its content table
        conn.exec_driver_sql(
            "INSERT INTO accounts_search(accounts_search, rank) VALUES ('integrity-check', 1)")


def value(engine: sa.Engine) -> st.SearchStrategy[str]:
    return st.text(alphabet(engine), min_size=1, max_size=12)


@HYPOTHESIS
@given(data=st.data())
def test_indexed_filter_returns_what_the_reference_returns(engine: sa.Engine,
                                                           data: st.DataObject) -> None:
    text = value(engine)
    rows = data.draw(st.lists(st.tuples(text, text, st.booleans()), min_size=1, max_size=10),
                     label="rows")
    serial = itertools.count()

    def unique(email: str, closed: bool) -> str:  # open accounts' emails are unique
        return email if closed else f"{email}#{next(serial)}"

    def term() -> st.SearchStrategy[str]:
        # a slice of a stored value (so that there are hits), or any text
        values = [v for r in table.values() for v in r if v]
        sliced = st.sampled_from(values).flatmap(
            lambda v: st.tuples(st.integers(0, len(v)), st.integers(1, 6)).map(
                lambda ij: v[ij[0]: ij[0] + ij[1]] or v))
        return st.one_of(sliced, st.text(alphabet(engine), min_size=1, max_size=6)).map(
            str.lower)

    def compare(conn: sa.Connection) -> None:
        check_index(conn)
        for _ in range(3):
            terms = tuple(dict.fromkeys(data.draw(st.lists(term(), min_size=1, max_size=3),
                                                  label="terms")))
            assert matching(conn, terms) == reference(engine, table, terms), terms
            # the open accounts only: the index leaves the closed ones out by itself
            # when every term goes through it (its marks), else the base row is read
            want = reference(engine, table, terms) - closed
            assert matching(conn, terms, open_only=True) == want, terms

    def pick(most: int, label: str) -> list[str]:  # ids are random: draw positions
        keys = list(table)
        picked = data.draw(st.lists(st.integers(0, len(keys) - 1), max_size=most,
                                    unique=True), label=label)
        return [keys[i] for i in picked]

    with engine.begin() as conn:
        conn.execute(accounts.delete())  # through the delete trigger, every example
        table: dict[str, Sequence[str | None]] = {}
        closed: set[str] = set()
        for name, email, is_closed in rows:
            email = unique(email, is_closed)
            rid = insert_account(conn, name, email, closed=is_closed)
            table[rid] = (name, email)
            if is_closed:
                closed.add(rid)
        compare(conn)
        # updates, through the update trigger: values, and closing or reopening
        for rid in pick(4, "updated"):
            name, email, is_closed = data.draw(st.tuples(text, text, st.booleans()),
                                               label="new values")
            email = unique(email, is_closed)
            conn.execute(accounts.update().where(accounts.c.id == rid)
                         .values(name=name, email_lower=email, closed=is_closed))
            table[rid] = (name, email)
            (closed.add if is_closed else closed.discard)(rid)
        for rid in pick(3, "closed or reopened"):
            if rid in closed:
                email = unique(str(table[rid][1]), False)
                conn.execute(accounts.update().where(accounts.c.id == rid)
                             .values(closed=False, email_lower=email))
                table[rid] = (table[rid][0], email)
                closed.discard(rid)
            else:
                conn.execute(accounts.update().where(accounts.c.id == rid).values(closed=True))
                closed.add(rid)
        compare(conn)
        for rid in pick(3, "deleted"):
            conn.execute(accounts.delete().where(accounts.c.id == rid))
            del table[rid]
            closed.discard(rid)
        if table:
            compare(conn)


def test_filter_through_parse_and_run_list(engine: sa.Engine) -> None:
    names = ["Émile Zola", "EMILE zola", "Kelvin \u212a", "ab%cd", "a_b", "back\\slash",
             "Straße", "plain"]
    with engine.begin() as conn:
        ids = {insert_account(conn, n, f"x{i}@example.org"): n for i, n in enumerate(names)}

    def names_for(flt: str) -> set[str]:
        q = parse_list_request(ACCOUNTS_LIST, secret=b"s", page_size=3, filter=flt)
        with engine.connect() as conn:
            page = run_list(conn, ACCOUNTS_LIST, q, sa.select(accounts))
            got = {ids[r.id] for r in page.rows}
            assert page.total_size == len(got) or page.next_page_token
            return got if not page.next_page_token else {"<many>"}

    assert names_for('"emile zola"') == {"EMILE zola"}  # case folds, accents stay
    assert names_for("%c") == {"ab%cd"}
    assert names_for("b%c") == {"ab%cd"}
    assert names_for("a_b") == {"a_b"}
    assert names_for("_") == {"a_b"}
    assert names_for("k\\s") == {"back\\slash"}
    assert names_for("\\") == {"back\\slash"}
    assert names_for("zola emi") == {"EMILE zola"}
    assert names_for('"zola" nothing') == set()
    assert names_for("example.org plain") == {"plain"}
    if engine.dialect.name == "sqlite":  # FTS5's folding, both paths alike
        assert names_for('"n k"') == {"Kelvin \u212a"}  # the Kelvin sign folds to k
        assert names_for("\u017ftra") == {"Straße"}
        assert names_for("éM") == {"Émile Zola"}
        assert names_for('"éMILE zo"') == {"Émile Zola"}


def test_users_filter_is_indexed_too(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        aid = insert_account(conn, "A", "a@a.io")
        for i, (email, ext) in enumerate([("Ann@X.io", None), (None, "EXT-77"), (None, None)]):
            conn.execute(users.insert().values(
                id=str(uuid.uuid4()), account_id=aid, kind="HUMAN", email=email,
                email_lower=email.lower() if email else None, name=f"user {i}",
                external_id=ext, roles=[], create_time=i, update_time=0, etag="e"))
    with engine.connect() as conn:
        def names(*terms: str) -> set[str]:
            clause = filter_clause(USER_LIST, terms, conn.dialect.name)
            return set(conn.scalars(sa.select(users.c.name).where(clause)))

        assert names("ann@x") == {"user 0"}
        assert names("ext-7") == {"user 1"}
        assert names("user") == {"user 0", "user 1", "user 2"}
        assert names("7") == {"user 1"}
        assert names("user 2", "x") == set()


def test_the_index_serves_the_filter(engine: sa.Engine) -> None:
    """EXPLAIN: the long-term filter is answered by the FTS5 table / the trigram indexes."""
    with engine.begin() as conn:
        for i in range(50):
            insert_account(conn, f"name {i}", f"e{i}@example.org")
        clause = filter_clause(ACCOUNTS_LIST, ("kestrel",), conn.dialect.name)
        stmt = sa.select(accounts.c.id).where(clause)
        sql = str(stmt.compile(conn, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "sqlite":
            plan = " / ".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert "accounts_search VIRTUAL TABLE INDEX" in plan, plan
            assert "INTEGER PRIMARY KEY (rowid=?)" in plan, plan
        else:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " / ".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
            assert "ix_accounts_name_trgm" in plan and "ix_accounts_email_lower_trgm" in plan, plan


def test_fts_folding_is_a_fold() -> None:
    fold, unfold = filters._fts_folds()
    assert fold["\u212a"] == "k" and fold["\u017f"] == "s" and fold["É"] == "é"
    for c, f in fold.items():
        assert filters._fts_fold_char(f) == f, (c, f)  # idempotent
        assert c in unfold[f]
    assert sorted(filters._fts_fold_variants("sk")) == sorted(
        ["sk", "s\u212a", "\u017fk", "\u017f\u212a"])


def test_downgrade_and_upgrade_again(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        insert_account(conn, "before downgrade", "b@d.io")
    from alembic import command

    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert migrate.current(engine) == "0001"
    with engine.begin() as conn:
        insert_account(conn, "while down", "w@d.io")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        check_index(conn)
        assert len(matching(conn, ("down",))) == 2  # the rebuild indexed both


def test_autogenerate_sees_no_difference(engine: sa.Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from accounts_grpc.store.tables import include_name, metadata

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_name": include_name})
        diff = compare_metadata(ctx, metadata)
        unfiltered = compare_metadata(MigrationContext.configure(conn), metadata)
    assert [d for d in diff if "search" in str(d) or "trgm" in str(d)] == []
    assert any("search" in str(d) or "trgm" in str(d) for d in unfiltered)


def test_the_page_plan_follows_the_number_of_hits(engine: sa.Engine) -> None:
    """SQLite: a rare term reads its few hits by rowid; a commoner one walks the order's
    index against the hits, and one in most rows tests the rows it walks with LIKE; the
    walks stop at a full page. Each time the index alone counts the hits, the closed
    accounts (marked in the index) left out."""
    with engine.begin() as conn:
        for i in range(400):
            name = "needle" if i % 200 == 7 else "kas" if i % 6 == 1 else "ssss"
            insert_account(conn, f"{name} {i}", f"e{i}@example.org", closed=i % 10 == 3)

    def plan(flt: str, order: str = "") -> plans._IndexedPlan | None:
        q = parse_list_request(ACCOUNTS_LIST, secret=b"s", page_size=20, filter=flt,
                               order_by=order)
        with engine.connect() as conn:
            return plans._plan_indexed(conn, ACCOUNTS_LIST, q, "unmarked", need_count=True)

    if engine.dialect.name != "sqlite":
        assert plan("needle") is None  # PostgreSQL: its planner has the statistics
        return
    assert plan("needle") == plans._IndexedPlan(hits=2, page="hits")
    kas = sum(1 for i in range(400) if i % 6 == 1 and i % 200 != 7 and i % 10 != 3)
    assert plan("kas") == plans._IndexedPlan(hits=kas, page="walk")  # 4 spellings
    assert plan("example.org") == plans._IndexedPlan(hits=360, page="scan")
    # no index serves a two-field order: the hits are read and sorted
    assert plan("example.org", "name, create_time") == plans._IndexedPlan(hits=360,
                                                                           page="hits")
    # the long s folds to s: 2**4 spellings would have to be tested on each row
    ssss = sum(1 for i in range(400) if i % 6 != 1 and i % 200 != 7 and i % 10 != 3)
    assert plan("ssss") == plans._IndexedPlan(hits=ssss, page="walk")
    assert plan("ne") is None  # a short term is tested on the rows themselves
