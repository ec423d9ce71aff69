"""The list-query module without a database: page sizes, filters, order, page tokens."""

from __future__ import annotations

import base64

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from accounts_grpc.domain import listing
from accounts_grpc.domain.errors import InvalidArgument
from accounts_grpc.domain.listing import (
    encode_token,
    page_size_of,
    parse_filter,
    parse_list_request,
    parse_order_by,
)
from accounts_grpc.store.listing import ListSpec, filter_clause

_md = sa.MetaData()
things = sa.Table(
    "things",
    _md,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("create_time", sa.BigInteger, nullable=False),
    sa.Column("update_time", sa.BigInteger, nullable=False),
)
SPEC = ListSpec(
    resource="things",
    id_column=things.c.id,
    orderable={
        "name": things.c.name,
        "email": things.c.email,
        "create_time": things.c.create_time,
        "update_time": things.c.update_time,
    },
    searchable=(things.c.name, things.c.email),
)
SECRET = b"s" * 32


def _fails(fn, *args, field: str, reason: str, **kwargs) -> InvalidArgument:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument) as info:
        fn(*args, **kwargs)
    e = info.value
    assert e.reason == reason, e.reason
    assert [v.field for v in e.violations] == [field], e.violations
    return e


# -- page_size ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given_size", "expected"), [(0, 50), (1, 1), (50, 50), (999, 999), (1000, 1000),
                                 (1001, 1000), (2**31 - 1, 1000)]
)
def test_page_size_rules(given_size: int, expected: int) -> None:
    assert page_size_of(given_size) == expected


@pytest.mark.parametrize("bad", [-1, -50, -(2**31)])
def test_negative_page_size_is_invalid(bad: int) -> None:
    e = _fails(page_size_of, bad, field="page_size", reason="INVALID_PAGE_SIZE")
    assert "negative" in e.message


# -- filter ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("", ()),
        ("   ", ()),
        ("acme", ("acme",)),
        ("Acme  Corp", ("acme", "corp")),
        ('"Acme Corp" berlin', ("acme corp", "berlin")),
        ('"  acme    corp "', ("acme corp",)),
        ('x"acme corp"y', ("x", "acme corp", "y")),
        ('""', ()),
        ("acme ACME Acme", ("acme",)),
        ("50% a_b \\", ("50%", "a_b", "\\")),
        ("tab\tnew\nline", ("tab", "new", "line")),
    ],
)
def test_filter_terms(text: str, terms: tuple[str, ...]) -> None:
    assert parse_filter(text) == terms


@pytest.mark.parametrize("text", ['"acme', 'acme "corp', 'a "b" "c'])
def test_unterminated_quote_is_invalid(text: str) -> None:
    e = _fails(parse_filter, text, field="filter", reason="INVALID_FILTER")
    assert "unterminated" in e.message


def test_filter_limits() -> None:
    _fails(parse_filter, "x" * 1001, field="filter", reason="INVALID_FILTER")
    _fails(parse_filter, " ".join(f"t{i}" for i in range(21)), field="filter",
           reason="INVALID_FILTER")
    assert len(parse_filter(" ".join(f"t{i}" for i in range(20)))) == 20


@given(st.text(max_size=200))
def test_filter_never_fails_other_than_invalid_argument(text: str) -> None:
    try:
        terms = parse_filter(text)
    except InvalidArgument as e:
        assert e.violations[0].field == "filter"
        return
    for t in terms:
        assert t and t == t.strip() and t == t.lower()
        assert '"' not in t
    assert len(set(terms)) == len(terms)


@given(st.lists(st.text(alphabet="abc XYZ%_\\", min_size=1).map(str.strip)
                .filter(lambda s: s != ""), max_size=5))
def test_quoted_phrases_round_trip(phrases: list[str]) -> None:
    text = " ".join(f'"{p}"' for p in phrases)
    want = tuple(dict.fromkeys(" ".join(p.split()).lower() for p in phrases))
    assert parse_filter(text) == want


def test_filter_clause_is_sql_like_on_every_searchable_column() -> None:
    clause = filter_clause(SPEC, ("50%", "a_b"))
    assert clause is not None
    sql = str(clause.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert "lower(things.name) LIKE '%50\\%%'" in sql
    assert "lower(things.email) LIKE '%a\\_b%'" in sql
    assert sql.count("ESCAPE") == 4
    assert " AND " in sql and " OR " in sql
    assert filter_clause(SPEC, ()) is None


def test_filter_clause_per_dialect() -> None:
    lite = filter_clause(SPEC, ("x",), "sqlite")
    assert lite is not None
    sql = str(lite.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}))
    assert "things.name LIKE '%x%'" in sql and "lower(" not in sql  # LIKE ignores case
    pg = filter_clause(SPEC, ("x",), "postgresql")
    assert pg is not None
    sql = str(pg.compile(dialect=postgresql.dialect()))
    assert "things.name ILIKE" in sql and "lower(" not in sql


# -- order_by ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "order"),
    [
        ("", (("create_time", False),)),
        ("   ", (("create_time", False),)),
        ("name", (("name", False),)),
        ("name desc", (("name", True),)),
        ("name DESC", (("name", True),)),
        ("name asc", (("name", False),)),
        ("create_time desc, name", (("create_time", True), ("name", False))),
        ("createTime desc", (("create_time", True),)),
        ("  email  ,  update_time desc ", (("email", False), ("update_time", True))),
    ],
)
def test_order_by(text: str, order: tuple[tuple[str, bool], ...]) -> None:
    assert parse_order_by(SPEC, text) == order


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("colour", "cannot order by 'colour'"),
        ("id", "cannot order by 'id'"),
        ("name sideways", "cannot read"),
        ("name desc extra", "cannot read"),
        ("name,", "cannot read"),
        (",name", "cannot read"),
        ("name, name desc", "named twice"),
    ],
)
def test_bad_order_by(text: str, says: str) -> None:
    e = _fails(parse_order_by, SPEC, text, field="order_by", reason="INVALID_ORDER_BY")
    assert says in e.message


def test_unknown_order_field_lists_the_known_ones() -> None:
    e = _fails(parse_order_by, SPEC, "colour", field="order_by", reason="INVALID_ORDER_BY")
    for name in ("create_time", "email", "name", "update_time"):
        assert name in e.violations[0].description


def test_several_bad_arguments_are_reported_together() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_list_request(SPEC, secret=SECRET, page_size=-1, filter='"x', order_by="colour")
    assert sorted(v.field for v in info.value.violations) == ["filter", "order_by", "page_size"]


# -- page tokens -------------------------------------------------------------------------
def _query(**kw):  # type: ignore[no-untyped-def]
    return parse_list_request(SPEC, secret=SECRET, **kw)


def _token(**kw) -> str:  # type: ignore[no-untyped-def]
    q = _query(**kw)
    return encode_token(q, False, ["acme", "00000000-0000-4000-8000-000000000000"]
                        if q.order[0][0] in ("name", "email") else
                        [1, "00000000-0000-4000-8000-000000000000"])


def test_token_round_trip() -> None:
    tok = _token(filter="acme", order_by="name desc")
    q = _query(filter="acme", order_by="name desc", page_token=tok, page_size=7)
    assert q.cursor is not None and q.cursor.backwards is False
    assert q.cursor.values == ["acme", "00000000-0000-4000-8000-000000000000"]
    assert q.page_size == 7  # the page size may change between pages
    assert "=" not in tok and "+" not in tok and "/" not in tok  # URL-safe


@pytest.mark.parametrize(
    "garbage",
    ["x", "!!!!", "not a token", "eyJ2IjoxfQ", "é", "a" * 5000,
     base64.urlsafe_b64encode(b'{"v":1,"q":"","b":false,"k":[]}' + b"\0" * 16).decode()],
)
def test_garbage_tokens_are_invalid(garbage: str) -> None:
    _fails(_query, page_token=garbage, field="page_token", reason="INVALID_PAGE_TOKEN")


def test_tampered_token_is_invalid() -> None:
    tok = _token(order_by="name")
    raw = bytearray(base64.urlsafe_b64decode(tok + "=" * (-len(tok) % 4)))
    for i in (0, len(raw) // 2, len(raw) - 1):
        bad = bytearray(raw)
        bad[i] ^= 0x01
        forged = base64.urlsafe_b64encode(bytes(bad)).decode().rstrip("=")
        _fails(_query, order_by="name", page_token=forged, field="page_token",
               reason="INVALID_PAGE_TOKEN")
    # a forged payload with a recomputed-looking but wrong MAC
    payload = raw[: -listing._MAC_BYTES].replace(b"acme", b"zzzz")
    forged = base64.urlsafe_b64encode(bytes(payload) + bytes(raw[-listing._MAC_BYTES:]))
    _fails(_query, order_by="name", page_token=forged.decode(), field="page_token",
           reason="INVALID_PAGE_TOKEN")


def test_token_of_another_server_secret_is_invalid() -> None:
    q = parse_list_request(SPEC, secret=b"other" * 8, order_by="name")
    tok = encode_token(q, False, ["a", "b"])
    _fails(_query, order_by="name", page_token=tok, field="page_token",
           reason="INVALID_PAGE_TOKEN")


@pytest.mark.parametrize(
    "other",
    [
        {"filter": "acme", "order_by": "name desc"},
        {"filter": "", "order_by": "name"},
        {"filter": "acme", "order_by": "email"},
        {"filter": "acme", "order_by": "name", "scope": {"show_closed": True}},
    ],
)
def test_token_bound_to_its_query(other: dict[str, object]) -> None:
    tok = _token(filter="acme", order_by="name")
    e = _fails(_query, page_token=tok, field="page_token", reason="PAGE_TOKEN_QUERY_MISMATCH",
               **other)
    assert "another query" in e.message


def test_token_bound_to_its_list() -> None:
    other = ListSpec("other_things", things.c.id, SPEC.orderable, SPEC.searchable)
    q = parse_list_request(other, secret=SECRET, order_by="name")
    tok = encode_token(q, False, ["a", "b"])
    _fails(_query, order_by="name", page_token=tok, field="page_token",
           reason="PAGE_TOKEN_QUERY_MISMATCH")


def test_filter_spelling_does_not_matter_to_the_token() -> None:
    tok = _token(filter="Acme  corp", order_by="name")
    q = _query(filter="acme corp", order_by="name", page_token=tok)
    assert q.cursor is not None


def test_keyset_sql_uses_row_values_for_one_direction_and_ors_for_mixed() -> None:
    from accounts_grpc.store.listing.run import _keyset

    same = _keyset([things.c.name, things.c.id], [False, False], ["a", "b"])
    sql = str(same.compile(dialect=sqlite.dialect()))
    assert sql.startswith("(things.name, things.id) >")
    mixed = _keyset([things.c.name, things.c.create_time, things.c.id], [False, True, True],
                    ["a", 1, "b"])
    sql = str(mixed.compile(dialect=sqlite.dialect()))
    assert sql.count(" OR ") == 2 and "things.create_time <" in sql
