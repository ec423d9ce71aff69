"""Lists, once for every service (AIP-132 / AIP-158), evaluated in SQL.

A list is described by a ``ListSpec`` (which fields may be ordered by, which are searched
by ``filter``); a request is parsed into a ``ListQuery`` (validated page size, filter
terms, order, cursor); ``run_list`` executes it on a Core ``Select`` that already carries
the caller's scope and returns a ``Page``.

- ``page_size``: 0 means 50, above 1000 is coerced to 1000, negative is INVALID_ARGUMENT.
- Keyset paging: the page token holds the sort-key values of the row it continues from,
  so page 1,000 costs what page 1 costs and rows inserted meanwhile are neither skipped
  nor repeated. Ties are broken by ``id``.
- Tokens are opaque and tamper-evident: base64url(JSON payload + HMAC-SHA256). Each is
  bound to its query (filter, order, scope): reused with another, INVALID_ARGUMENT.
- ``previous_page_token`` pages backwards; empty on the first page, as
  ``next_page_token`` is empty on the last.
- ``filter``: free-text terms, ``"quoted phrases"`` kept whole; every term must occur,
  case-insensitively, in one of the spec's search columns (FlexMeasures semantics).
  On SQLite a spec with a ``SearchIndex`` is served by an FTS5 trigram index (see
  ``SearchIndex``); PostgreSQL's ``ILIKE`` is served by pg_trgm GIN indexes where
  migration 0002 could make them. When the list is a whole of the SQLite index
  (``IndexScope``: every account, or every open one) the index alone counts the hits,
  and the count picks the page's plan (``_plan_indexed``).
- ``order_by``: ``"name"``, ``"name desc"``, ``"create_time desc, name"`` ...; an unknown
  field is INVALID_ARGUMENT with a field violation.
- ``total_size`` is counted when the first page is read (not at all when the first page
  holds every row) and carried, tamper-evident, in the page tokens: exact for the first
  page, and for later pages the count as of the first page (AIP-158 allows an estimate),
  so that no page but the first pays for a scan of every matching row. An unfiltered list
  of a whole of the table (``IndexScope``) whose spec has a count the database keeps
  (``ListSpec.kept_counts``) does not count at all: the page's own statement reads the
  kept count, so page 1 of 100,000 rows costs what page 1 of 20 does, and its total is
  exact as of the very snapshot the page was read in.
- Statements: every value is a bind parameter, so a service whose base statements are
  made once (``run_list(params=...)``) gets the statements built on them kept per shape
  of request, and a call neither builds nor compiles SQL. On SQLite a page is read in one
  step, packed into one JSON value (``_page_rows`` says why).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import itertools
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from accounts_grpc.domain.errors import InvalidArgument
from accounts_grpc.domain.validate import shorten
from accounts_grpc.store.db import Record

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_FILTER_LENGTH = 1000
MAX_FILTER_TERMS = 20
_TOKEN_VERSION = 1
_MAC_BYTES = 16


@dataclass(frozen=True)
class SearchIndex:
    """An SQLite FTS5 trigram index that serves a list's ``filter``.

    ``table`` is an external-content FTS5 table (``tokenize='trigram case_sensitive
    0'``) whose rowid is the rowid of ``base`` and whose ``columns`` index, position by
    position, the spec's ``searchable`` expressions (NULL indexes as nothing, as
    ``coalesce(col, '')`` would). Migrations make it and its sync triggers (0002).

    Semantics: a term occurs in a value when it is a substring of it after both are
    folded the way FTS5 folds (per character, ASCII and Unicode case, long s to ``s``,
    ``K`` (Kelvin) to ``k`` ...). Terms of 3 characters or more are answered by
    ``MATCH`` (a trigram phrase query is an exact substring test); shorter ones have no
    trigram, so they are tested with ``LIKE`` on the base table, over every spelling
    that folds to the term (``_fts_fold_variants``): the same rows either way.

    ``marked``: the rows of ``base`` for which this holds carry ``MARK`` in the index's
    extra last column ``mark`` (accounts: the closed ones, migration 0003), so that a
    search of the other rows leaves them out inside the index (see ``IndexScope``).
    """

    table: str
    columns: tuple[str, ...]
    base: sa.Table
    marked: ColumnElement[bool] | None = None

    @property
    def rowid(self) -> ColumnElement[Any]:
        return sa.literal_column(f"{self.base.name}.rowid", sa.Integer())


#: the value of a marked row's ``mark`` column: one trigram no name or email can hold
#: (validation refuses control characters)
MARK = "\x01\x01\x01"

#: What a list's base statement selects, when it is a whole of its table (and of its search
#: index): ``"all"`` every row of the table, ``"unmarked"`` those not ``marked`` (every open
#: account). On SQLite a filter served by the index alone then needs no table row to count
#: its hits, and the page can be planned from that count; on any database an unfiltered
#: list reads its size in the spec's ``kept_counts`` (``run_list``). None: any other scope
#: (one account's users, a consultant's clients). A caller must name it only for a base
#: statement that selects exactly that, with no other condition.
IndexScope = Literal["all", "unmarked"]


@dataclass(frozen=True)
class ListSpec:
    """What a resource's list allows. Column expressions must be NOT NULL
    (searchable ones may be NULL: NULL matches no term)."""

    resource: str  # e.g. "accounts", names the list in tokens
    id_column: ColumnElement[Any]
    orderable: Mapping[str, ColumnElement[Any]]
    searchable: Sequence[ColumnElement[Any]]
    default_order: tuple[tuple[str, bool], ...] = (("create_time", False),)
    search: SearchIndex | None = None  # an index serving ``filter`` (SQLite)
    #: the number of rows each ``IndexScope`` selects, kept by the database itself: a
    #: statement selecting one value (a column of a one-row table that triggers keep exact
    #: in the transaction of every write to the table; accounts: migration 0007). An
    #: unfiltered list of that scope reads it with its page instead of counting the rows;
    #: if it reads no value (no row), it counts. Made once: statements built on it are kept.
    kept_counts: Mapping[IndexScope, sa.Select[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.search is not None and len(self.search.columns) != len(self.searchable):
            raise ValueError(f"{self.resource}: the search index must cover every "
                             "searchable column, in order")


@dataclass(frozen=True)
class Cursor:
    backwards: bool
    values: list[Any]  # sort-key values, then the id
    inclusive: bool = False  # the row at ``values`` itself belongs to the page
    total: int | None = None  # total_size, as counted for the first page


@dataclass(frozen=True)
class ListQuery:
    page_size: int
    terms: tuple[str, ...]
    order: tuple[tuple[str, bool], ...]  # (field, descending)
    cursor: Cursor | None
    query_hash: str
    secret: bytes = field(repr=False, default=b"")


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    next_page_token: str
    previous_page_token: str
    total_size: int


def _bad(field_name: str, description: str, reason: str = "INVALID_ARGUMENT") -> InvalidArgument:
    return InvalidArgument.field(field_name, description, reason=reason)


def page_size_of(page_size: int) -> int:
    if page_size < 0:
        raise _bad("page_size", f"must not be negative (got {page_size})", "INVALID_PAGE_SIZE")
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    return min(page_size, MAX_PAGE_SIZE)


def parse_filter(text: str) -> tuple[str, ...]:
    """Split into terms; ``"quoted phrases"`` stay whole. Lower-cased, de-duplicated."""
    if len(text) > MAX_FILTER_LENGTH:
        raise _bad("filter", f"must be at most {MAX_FILTER_LENGTH} characters", "INVALID_FILTER")
    terms: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == '"':
            end = text.find('"', i + 1)
            if end < 0:
                raise _bad("filter", f"unterminated quote at position {i}", "INVALID_FILTER")
            phrase = " ".join(text[i + 1 : end].split())
            if phrase:
                terms.append(phrase)
            i = end + 1
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] != '"':
            j += 1
        terms.append(text[i:j])
        i = j
    out = tuple(dict.fromkeys(t.lower() for t in terms))
    if len(out) > MAX_FILTER_TERMS:
        raise _bad("filter", f"must have at most {MAX_FILTER_TERMS} terms", "INVALID_FILTER")
    return out


def parse_order_by(spec: ListSpec, text: str) -> tuple[tuple[str, bool], ...]:
    text = text.strip()
    if not text:
        return spec.default_order
    order: list[tuple[str, bool]] = []
    for part in text.split(","):
        words = part.split()
        if (
            not words
            or len(words) > 2
            or (len(words) == 2 and words[1].lower() not in ("asc", "desc"))
        ):
            raise _bad(
                "order_by",
                f"cannot read {shorten(part.strip())!r}: use 'field' or 'field desc'",
                "INVALID_ORDER_BY",
            )
        name = words[0]
        # accept lowerCamel spellings from JSON clients
        snake = "".join("_" + ch.lower() if ch.isupper() else ch for ch in name)
        if snake not in spec.orderable:
            raise _bad(
                "order_by",
                f"cannot order by {shorten(name)!r}; use one of {sorted(spec.orderable)}",
                "INVALID_ORDER_BY",
            )
        if any(o[0] == snake for o in order):
            raise _bad("order_by", f"{shorten(name)!r} is named twice", "INVALID_ORDER_BY")
        order.append((snake, len(words) == 2 and words[1].lower() == "desc"))
    return tuple(order)


def _hash_query(
    spec: ListSpec,
    terms: Sequence[str],
    order: Sequence[tuple[str, bool]],
    scope: Mapping[str, Any],
) -> str:
    blob = json.dumps(
        [spec.resource, list(terms), [list(o) for o in order], sorted(scope.items())],
        default=str,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_token(
    query: ListQuery,
    backwards: bool,
    values: list[Any],
    *,
    inclusive: bool = False,
    total: int | None = None,
) -> str:
    data: dict[str, Any] = {"v": _TOKEN_VERSION, "q": query.query_hash, "b": backwards,
                            "k": values}
    if inclusive:
        data["i"] = True
    if total is not None:
        data["t"] = total
    payload = json.dumps(data, separators=(",", ":"), default=str).encode()
    return base64.urlsafe_b64encode(payload + _mac(query.secret, payload)).decode().rstrip("=")


def _decode_token(token: str, secret: bytes, query_hash: str) -> Cursor:
    bad = _bad("page_token", "is not a page token of this list", "INVALID_PAGE_TOKEN")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    if len(raw) <= _MAC_BYTES:
        raise bad
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise bad
    try:
        data = json.loads(payload)
    except ValueError:
        raise bad from None
    if (
        not isinstance(data, dict)
        or data.get("v") != _TOKEN_VERSION
        or not isinstance(data.get("k"), list)
    ):
        raise bad
    if data.get("q") != query_hash:
        raise _bad(
            "page_token",
            "was made for another query: keep filter, order_by and the "
            "other list arguments unchanged while paging",
            "PAGE_TOKEN_QUERY_MISMATCH",
        )
    total = data.get("t")
    return Cursor(
        bool(data.get("b")),
        data["k"],
        bool(data.get("i")),
        total if isinstance(total, int) and not isinstance(total, bool) else None,
    )


def parse_list_request(
    spec: ListSpec,
    *,
    secret: bytes,
    page_size: int = 0,
    page_token: str = "",
    filter: str = "",
    order_by: str = "",
    scope: Mapping[str, Any] | None = None,
) -> ListQuery:
    """Validate a list request. ``scope`` names everything else the result depends on
    (parent id, show_closed, the caller ...) so that a token cannot cross queries."""
    errors: list[InvalidArgument] = []

    def attempt(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except InvalidArgument as e:
            errors.append(e)
            return None

    size = attempt(page_size_of, page_size)
    terms = attempt(parse_filter, filter)
    order = attempt(parse_order_by, spec, order_by)
    if errors:
        if len(errors) == 1:
            raise errors[0]
        raise InvalidArgument(
            "; ".join(e.message for e in errors), [v for e in errors for v in e.violations]
        )
    qh = _hash_query(spec, terms, order, scope or {})
    cursor = _decode_token(page_token, secret, qh) if page_token else None
    if cursor is not None and len(cursor.values) != len(order) + 1:
        raise _bad("page_token", "is not a page token of this list", "INVALID_PAGE_TOKEN")
    return ListQuery(size, terms, order, cursor, qh, secret)


def _like_escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains_ci(col: ColumnElement[Any], pattern: Any, dialect: str | None) -> Any:
    """``col`` contains the lower-case ``pattern``, ignoring case, as cheaply as the
    database allows: SQLite's LIKE already ignores (ASCII) case, exactly as its lower()
    folds it; PostgreSQL has ILIKE; elsewhere lower() LIKE."""
    if dialect == "sqlite":
        return col.like(pattern, escape="\\")
    if dialect == "postgresql":
        return col.ilike(pattern, escape="\\")
    return sa.func.lower(col).like(pattern, escape="\\")


#: FTS5 (3.40) folds no character beyond this point (checked by a test over all of Unicode)
_FOLD_SCAN_END = 0x1F000


@functools.cache
def _fts_folds() -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """FTS5's case folding of every non-ASCII character it folds, as (fold, unfold):
    ``fold[c]`` is what c folds to, ``unfold[f]`` every non-ASCII character folding to f.

    Asked of the SQLite library itself (the one SQLAlchemy's pysqlite driver uses), once
    per process (about 0.1 s), so the short-term path agrees with the index exactly.
    """
    import sqlite3

    def cased(ch: str) -> bool:
        return ch.lower() != ch or ch.upper() != ch or ch.casefold() != ch

    chars = [chr(i) for i in range(0x80, _FOLD_SCAN_END)
             if not 0xD800 <= i < 0xE000 and cased(chr(i))]
    chars += ["\ufffe", "\uffff"]  # SQLite reads these non-characters as U+FFFD
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='trigram case_sensitive 0')")
        db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        db.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)", [(ord(c), c * 3) for c in chars])
        fold = {chr(doc): str(term)[0] for doc, term in db.execute("SELECT doc, term FROM v")}
    finally:
        db.close()
    fold = {c: f for c, f in fold.items() if c != f}
    unfold: dict[str, set[str]] = {}
    for c, f in fold.items():
        unfold.setdefault(f, set()).add(c)
    return fold, {f: frozenset(cs) for f, cs in unfold.items()}


def _fts_fold_char(ch: str) -> str:
    if ch < "\x80":
        return ch.lower()
    return _fts_folds()[0].get(ch, ch)


def _fts_fold_variants(term: str) -> list[str]:
    """Every spelling of ``term`` that FTS5 folds to what it folds ``term`` to, up to
    ASCII case (which LIKE ignores itself)."""
    unfold = _fts_folds()[1]
    choices = []
    for ch in term:
        f = _fts_fold_char(ch)
        choices.append(sorted({f} | unfold.get(f, frozenset())))
    return ["".join(p) for p in itertools.product(*choices)]


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _fts_match(index: SearchIndex, long: Sequence[str], *, unmarked: bool) -> str:
    """The FTS5 query: every term a phrase in some column (and, for ``unmarked``, the
    row not marked)."""
    cols = "{" + " ".join(index.columns) + "}"
    match = " AND ".join(f"{cols} : {_fts_phrase(t)}" for t in long)
    if unmarked and index.marked is not None:
        match = f"({match}) NOT mark : {_fts_phrase(MARK)}"
    return match


def _long_terms(terms: Sequence[str]) -> list[str]:
    return [t for t in terms if len(t) >= 3 and "\x00" not in t]


def _text(name: str, value: str) -> BindParameter[str]:
    return sa.bindparam(name, value, type_=sa.String())


class _Filter:
    """A filter as its bind parameters' values and its shape: two filters of one shape
    differ only in the values, so a statement built for one serves the other. The clause
    itself (named bind parameters) is built only when a statement is (``clause``)."""

    def __init__(self, params: dict[str, Any], shape: tuple[Any, ...],
                 build: Callable[[], ColumnElement[bool] | None]) -> None:
        self.params = params
        self.shape = shape
        self._build = build

    @functools.cached_property
    def clause(self) -> ColumnElement[bool] | None:
        return self._build()


def _filter(spec: ListSpec, terms: Sequence[str], dialect: str | None, *,
            index_scope: IndexScope | None = None, plan: PagePlan = "hits") -> _Filter:
    """See ``filter_clause``."""
    if not terms:
        return _Filter({}, (), lambda: None)
    params: dict[str, Any] = {}
    index = spec.search
    if dialect == "sqlite" and index is not None:
        # the SQLite FTS5 spelling (see ``SearchIndex``), as ``plan`` has it
        # (``_plan_indexed``): "scan" tests every term on the rows, as the short terms
        # are; "walk" keeps SQLite from driving the statement by the hits (``+rowid``)
        long = [] if plan == "scan" else _long_terms(terms)
        unmarked = index_scope == "unmarked"
        shape: list[Any] = ["fts", plan, bool(long), unmarked]
        if long:
            params["_match"] = _fts_match(index, long, unmarked=unmarked)
        patterns: list[list[str]] = []  # the bind names of each term tested by LIKE
        for i, t in enumerate(t for t in terms if t not in long):
            spellings = _fts_fold_variants(t) if "\x00" not in t else [t]
            names = [f"_like{i}_{j}" for j in range(len(spellings))]
            params.update((n, f"%{_like_escape(v)}%") for n, v in zip(names, spellings,
                                                                      strict=True))
            patterns.append(names)
            shape.append(len(spellings))

        def build_indexed() -> ColumnElement[bool]:
            assert index is not None
            clauses: list[ColumnElement[bool]] = []
            if long:
                hits: sa.Select[Any] = (sa.select(sa.literal_column("rowid"))
                                        .select_from(sa.table(index.table)))
                hits = hits.where(_matches(index, _text("_match", params["_match"])))
                rowid = (sa.literal_column(f"+{index.base.name}.rowid") if plan == "walk"
                         else index.rowid)
                clauses.append(rowid.in_(hits))
            for names in patterns:
                binds = [_text(n, params[n]) for n in names]
                clauses.append(sa.or_(*(c.like(b, escape="\\")
                                        for c in spec.searchable for b in binds)))
            return sa.and_(*clauses)

        return _Filter(params, tuple(shape), build_indexed)
    for i, t in enumerate(terms):
        params[f"_like{i}"] = f"%{_like_escape(t)}%"

    def build() -> ColumnElement[bool]:
        clauses = []
        for i in range(len(terms)):
            bind = _text(f"_like{i}", params[f"_like{i}"])
            clauses.append(sa.or_(*(_contains_ci(c, bind, dialect) for c in spec.searchable)))
        return sa.and_(*clauses)

    return _Filter(params, ("like", len(terms)), build)


def _matches(index: SearchIndex, query: ColumnElement[str]) -> ColumnElement[bool]:
    return sa.literal_column(index.table).op("MATCH")(query)


def filter_clause(
    spec: ListSpec,
    terms: Sequence[str],
    dialect: str | None = None,
    *,
    index_scope: IndexScope | None = None,
    plan: PagePlan = "hits",
) -> ColumnElement[bool] | None:
    """Every term in some searchable column (case-insensitive substring).

    ``dialect`` (``conn.dialect.name``) picks the cheapest spelling; without it the
    portable ``lower(col) LIKE`` is used. On SQLite a spec's ``search`` index serves it;
    ``index_scope`` and ``plan`` are ``run_list``'s plan for it.
    """
    return _filter(spec, terms, dialect, index_scope=index_scope, plan=plan).clause


#: How a page of a filter the SQLite index answers alone is read (``_plan_indexed``):
#: "hits" SQLite reads the hits by rowid and sorts them; "walk" it walks the order's
#: index and tests each entry against the hits, collected first; "scan" it walks the
#: order's index and tests each row with LIKE. Both walks stop at a full page.
PagePlan = Literal["hits", "walk", "scan"]


@dataclass(frozen=True)
class _IndexedPlan:
    hits: int  # rows the filter matches, as of the first page when carried in a token
    page: PagePlan


# Costs that pick the plan, measured on SQLite 3.40 with 100,000 accounts and a page of
# 20 (P = page_size + 1 rows wanted, N rows in the table, h hits, r = h / N):
# "hits" about 0.75 us a hit (a rowid lookup, the sort); "walk" about 0.3 us a hit to
# collect them plus 0.1 us an index entry, and P / r entries are walked; "scan" about
# 0.15 us a row and LIKE pattern, P / r rows. At 1% (``kestrel``, 4 spellings): hits
# 0.75 ms, walk 0.69 ms, scan 1.2 ms; at 5%: 1.9, 1.3 and 0.2 ms; at 100%: 72, 59 and
# 0.1 ms. Hence: walk when h * h * _WALK_FACTOR > P * N, scan when
# h * h * _SCAN_FACTOR > P * N * (LIKE patterns a row is tested with).
_WALK_FACTOR = 5
_SCAN_FACTOR = 8
#: a term is tested on the rows by LIKE over every spelling that folds to it; one with
#: more spellings than this keeps to the index (``_fts_fold_variants``)
_SCAN_MAX_SPELLINGS = 8

_HITS: dict[str, tuple[sa.Select[Any], sa.Select[Any]]] = {}


def _hits_statements(index: SearchIndex) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """(count of the hits of ``:_match`` and the table's largest rowid; the latter alone),
    built once per index."""
    built = _HITS.get(index.table)
    if built is None:
        match = _matches(index, sa.bindparam("_match", type_=sa.String()))
        counted = (sa.select(sa.func.count()).select_from(sa.table(index.table))
                   .where(match).scalar_subquery())
        rowids = sa.select(sa.func.max(index.rowid)).select_from(index.base).scalar_subquery()
        both: sa.Select[Any] = sa.select(counted, rowids)
        built = _HITS[index.table] = (both, sa.select(rowids))
    return built


def _plan_indexed(conn: sa.Connection, spec: ListSpec, query: ListQuery,
                  index_scope: IndexScope | None, *, need_count: bool) -> _IndexedPlan | None:
    """How to run a filter that the SQLite index answers alone, or None if it does not.

    It does when the base statement is a whole of the index (``index_scope``) and every
    term goes through the index (3 characters or more). Then the number of hits is the
    list's size, counted in the index without reading a row, and it picks the page's
    plan (``PagePlan``): few hits, SQLite reads them by rowid and sorts them (what it
    does by itself); more, it walks the order's index from the cursor and stops at a
    full page, testing each entry against the hits or, when they are many, each row with
    LIKE, so that a term that matches most rows no longer reads and sorts all of them.
    Walking needs an index on the order (one ``order_by`` field); a scan, terms of few
    spellings.
    """
    index = spec.search
    if (conn.dialect.name != "sqlite" or index is None or index_scope is None
            or not query.terms or len(_long_terms(query.terms)) != len(query.terms)):
        return None
    counted, rowids = _hits_statements(index)
    known = query.cursor.total if query.cursor is not None else None
    if need_count or known is None:
        match = _fts_match(index, query.terms, unmarked=index_scope == "unmarked")
        hits, size = conn.execute(counted, {"_match": match}).one()
    else:
        hits, size = known, conn.execute(rowids).scalar()
    wanted = (query.page_size + 1) * (size or 0)
    page: PagePlan = "hits"
    if len(query.order) == 1 and hits * hits * _WALK_FACTOR > wanted:
        page = "walk"
        spellings = [len(_fts_fold_variants(t)) for t in query.terms]
        patterns = sum(spellings) * len(spec.searchable)
        if (max(spellings) <= _SCAN_MAX_SPELLINGS
                and hits * hits * _SCAN_FACTOR > wanted * patterns):
            page = "scan"
    return _IndexedPlan(int(hits), page)


def _keyset(
    cols: list[ColumnElement[Any]], desc: list[bool], values: Sequence[ColumnElement[Any]]
) -> ColumnElement[bool]:
    """Rows strictly after ``values`` in the order (cols, desc)."""
    if len(set(desc)) == 1:
        left = sa.tuple_(*cols)
        right = sa.tuple_(*values)
        return left < right if desc[0] else left > right
    ors = []
    for i in range(len(cols)):
        eqs = [cols[j] == values[j] for j in range(i)]
        cmp = cols[i] < values[i] if desc[i] else cols[i] > values[i]
        ors.append(sa.and_(*eqs, cmp))
    return sa.or_(*ors)


class _Statements:
    """The statements of one list shape: the page (with the kept count as its ``_total``
    column, if asked), and (built when first asked) the count and the page packed into
    one value."""

    def __init__(self, base: sa.Select[Any], filtered: sa.Select[Any], page: sa.Select[Any],
                 scan_desc: list[bool], kept: sa.Select[Any] | None = None) -> None:
        self.base = base
        self.kept = kept
        self.page = page
        self.scan_desc = scan_desc
        self._filtered = filtered
        self._count: sa.Select[Any] | None = None
        self._packed: tuple[sa.Select[Any], list[str], list[int], list[int]] | None = None
        self._driver: tuple[str, list[str], dict[str, Any]] | None = None
        self._driver_made = False
        #: every column survives a trip through JSON as it is (no bytes, no types that
        #: convert their values in Python)
        self.packable = all(type(c.type) in _JSON_SAFE for c in page.selected_columns)

    @property
    def count(self) -> sa.Select[Any]:
        if self._count is None:
            inner = self._filtered.order_by(None).subquery()
            self._count = sa.select(sa.func.count()).select_from(inner)
        return self._count

    @property
    def packed(self) -> tuple[sa.Select[Any], list[str], list[int], list[int]]:
        """(SELECT json_group_array(json_array(<the page's columns>)) FROM (page), the
        column names, the positions of Boolean columns, of the sort keys)."""
        if self._packed is None:
            cols = list(self.page.selected_columns)
            names = [str(c.key) for c in cols]
            # the subquery's columns by name: cheaper to build than its column collection
            values: list[ColumnElement[Any]] = [
                sa.func.json(sa.literal_column(f'page."{n}"')) if isinstance(c.type, sa.JSON)
                else sa.literal_column(f'page."{n}"')
                for n, c in zip(names, cols, strict=True)
            ]
            flags = [i for i, c in enumerate(cols) if isinstance(c.type, sa.Boolean)]
            keys = [i for i, n in enumerate(names) if n.startswith("_k")]
            packed = (sa.select(sa.func.json_group_array(sa.func.json_array(*values)))
                      .select_from(self.page.subquery("page")))
            self._packed = (packed, names, flags, keys)
        return self._packed

    def driver_packed(self, dialect: sa.Dialect) -> tuple[str, list[str], dict[str, Any]] | None:
        """The packed page compiled once for the DBAPI cursor, as ``FastSelect`` runs
        its statements: (SQL, the names of its parameters in order, the values of those
        the statement carries itself). None if a parameter needs SQLAlchemy at execution
        (a bind processor, an expanding or post-compiled parameter)."""
        if not self._driver_made:
            compiled = self.packed[0].compile(dialect=dialect)
            binds = compiled.bind_names
            plain = (compiled.positional and compiled.positiontup is not None
                     and not compiled.post_compile_params and not compiled.literal_execute_params
                     and all(not b.expanding
                             and b.type.dialect_impl(dialect).bind_processor(dialect) is None
                             for b in binds))
            if plain:
                self._driver = (str(compiled), list(compiled.positiontup or ()),
                                {name: b.effective_value for b, name in binds.items()})
            self._driver_made = True
        return self._driver


_JSON_SAFE = frozenset({sa.String, sa.Integer, sa.BigInteger, sa.Boolean, sa.JSON})


def _page_rows(conn: sa.Connection, built: _Statements, values: Mapping[str, Any], *,
               reused: bool = False) -> list[Any]:
    """The page's rows. On SQLite in one step: the Python module gives up and takes back
    the GIL around every step of a statement, one a row, and under load every take-back
    waits behind the other worker threads; packed into one JSON value, the page is one
    step (the rows are ordered again here, as SQLite does not promise to aggregate them
    in the subquery's order before 3.44). Elsewhere the rows as the driver returns them.

    ``reused``: ``built`` is kept for reuse (``run_list(params=...)``), so the packed page
    is compiled once and run straight on the DBAPI cursor (SQLite), sparing SQLAlchemy's
    work per execution (the statement's cache key, parameter and result processing: about
    as much as the statement itself), as ``FastSelect`` does for point reads.
    """
    if conn.dialect.name != "sqlite" or not built.packable:
        return list(conn.execute(built.page, values))
    stmt, names, flags, keys = built.packed
    driver = built.driver_packed(conn.dialect) if reused else None
    raw = conn.connection.driver_connection if driver is not None else None
    if driver is not None and raw is not None:
        sql, order, carried = driver
        packed = raw.execute(sql, [values[k] if k in values else carried[k]
                                   for k in order]).fetchone()[0]
    else:
        packed = conn.execute(stmt, values).scalar_one()
    rows = json.loads(packed) if packed else []
    for i in flags:
        for row in rows:
            if row[i] is not None:
                row[i] = bool(row[i])
    # stable sorts, last key first: the order of the statement (BINARY collation of
    # UTF-8 text orders as code points do)
    for i, desc in reversed(list(zip(keys, built.scan_desc, strict=True))):
        rows.sort(key=operator.itemgetter(i), reverse=desc)
    return [Record(dict(zip(names, row, strict=True))) for row in rows]


#: statements built for reusable base statements (``run_list(params=...)``), by shape
_BUILT: dict[tuple[Any, ...], _Statements] = {}
_BUILT_MAX = 2048


def _statements(spec: ListSpec, query: ListQuery, base: sa.Select[Any], flt: _Filter,
                dialect: str, *, reuse: bool, kept: sa.Select[Any] | None = None) -> _Statements:
    """``kept``: a kept count (``ListSpec.kept_counts``) the page also selects, as
    ``_total``: an uncorrelated scalar subquery, which SQLite and PostgreSQL evaluate once
    per statement, in the page's own snapshot."""
    cursor = query.cursor
    # the dialect too: a filter is spelled per dialect (LIKE, ILIKE, FTS5)
    shape = (id(base), dialect, spec.resource, query.order, query.page_size, flt.shape,
             None if cursor is None else (cursor.backwards, cursor.inclusive), id(kept))
    built = _BUILT.get(shape) if reuse else None
    if built is not None and built.base is base and built.kept is kept:
        return built
    filtered = base if flt.clause is None else base.where(flt.clause)
    cols = [spec.orderable[name] for name, _ in query.order] + [spec.id_column]
    desc = [d for _, d in query.order]
    desc.append(desc[-1])  # the id breaks ties in the direction of the last key
    backwards = bool(cursor and cursor.backwards)
    scan_desc = [not d for d in desc] if backwards else desc
    stmt = filtered.add_columns(*(c.label(f"_k{i}") for i, c in enumerate(cols)))
    if kept is not None:
        stmt = stmt.add_columns(kept.scalar_subquery().label("_total"))
    if cursor is not None:
        at = [sa.bindparam(f"_at{i}", type_=c.type) for i, c in enumerate(cols)]
        after = _keyset(cols, scan_desc, at)
        if cursor.inclusive:
            after = sa.or_(after, sa.and_(*(c == v for c, v in zip(cols, at, strict=True))))
        stmt = stmt.where(after)
    stmt = stmt.order_by(
        *(c.desc() if d else c.asc() for c, d in zip(cols, scan_desc, strict=True))
    ).limit(query.page_size + 1)
    built = _Statements(base, filtered, stmt, scan_desc, kept)
    if reuse:
        if len(_BUILT) >= _BUILT_MAX:
            _BUILT.clear()
        _BUILT[shape] = built
    return built


#: PostgreSQL's cost of a random page read for the count of a filtered list. The default,
#: 4, models spinning disks, and with it the planner counts a pg_trgm-filtered list by
#: reading the whole table even where the trigram index finds the hits far sooner (100,000
#: accounts, PostgreSQL 15, SSD: a 1% filter 84 ms by a scan, 11 ms by the index; 5%: 87
#: and 17 ms). With 1.1, the usual value for SSDs, it picks the index for those and still
#: scans a filter that matches every row (90 ms, against 154 ms by an index).
_PG_COUNT_PAGE_COST = "1.1"


def _count(conn: sa.Connection, count: sa.Select[Any], values: Mapping[str, Any], *,
           filtered: bool) -> int:
    if filtered and conn.dialect.name == "postgresql" and conn.in_transaction():
        # for this read's transaction only (set_config(..., true) is SET LOCAL)
        conn.execute(sa.select(sa.func.set_config("random_page_cost", _PG_COUNT_PAGE_COST,
                                                  True)))
    return int(conn.execute(count, values).scalar_one())


def run_list(
    conn: sa.Connection,
    spec: ListSpec,
    query: ListQuery,
    base: sa.Select[Any],
    *,
    params: Mapping[str, Any] | None = None,
    count: bool = True,
    index_scope: IndexScope | None = None,
) -> Page:
    """Run ``base`` (already scoped to what the caller may see) as one page of the list.

    ``params``: ``base`` is a statement made once (a module constant) whose bind
    parameters take these values; the statements built on it for each shape of request
    (order, page size, filter shape, cursor kind) are then kept and reused, which spares
    building and compiling them on every call. Without it, ``base`` carries its values
    and everything is built afresh.

    ``index_scope``: what ``base`` selects, if it is a whole of its table and of the
    spec's search index (see ``IndexScope``); it lets the index alone count a filtered
    list on SQLite, and an unfiltered list read the spec's kept count of that scope.
    """
    cursor = query.cursor
    first = cursor is None or cursor.total is None
    plan = _plan_indexed(conn, spec, query, index_scope, need_count=count and first)
    # an unfiltered whole of the table: its size is kept by the database, and the page's
    # statement reads it (no count, no second statement)
    kept = (spec.kept_counts.get(index_scope)
            if count and first and index_scope is not None and not query.terms else None)
    dialect = conn.dialect.name
    flt = _filter(spec, query.terms, dialect, index_scope=index_scope,
                  plan="hits" if plan is None else plan.page)
    built = _statements(spec, query, base, flt, dialect, reuse=params is not None, kept=kept)
    values = {**(params or {}), **flt.params}
    if cursor is not None:
        values.update((f"_at{i}", v) for i, v in enumerate(cursor.values))
    rows = _page_rows(conn, built, values, reused=params is not None)
    kept_total = rows[0]._total if kept is not None and rows else None
    backwards = bool(cursor and cursor.backwards)
    if backwards and not rows:
        # nothing before the cursor any more (rows deleted meanwhile): the page before
        # the first page is the first page
        restart = ListQuery(query.page_size, query.terms, query.order, None,
                            query.query_hash, query.secret)
        return run_list(conn, spec, restart, base, params=params, count=count,
                        index_scope=index_scope)
    more = len(rows) > query.page_size
    rows = rows[: query.page_size]
    if backwards:
        rows.reverse()
    n_keys = len(query.order) + 1

    def key_of(row: Any) -> list[Any]:
        return [getattr(row, f"_k{i}") for i in range(n_keys)]

    # total_size: counted once, when the first page is read, and carried in the tokens
    # from there (a count is a scan of every matching row: it must not make page 1,000
    # cost more than page 1). A first page that holds everything needs no count at all,
    # nor does a list whose size the database keeps (read with the page).
    total: int | None = None
    if count:
        if query.cursor is None and not more:
            total = len(rows)
        elif query.cursor is not None and query.cursor.total is not None:
            total = query.cursor.total
        elif kept_total is not None:
            total = int(kept_total)
        elif plan is not None:
            total = plan.hits
        else:
            total = _count(conn, built.count, values, filtered=bool(query.terms))

    def token(back: bool, values: list[Any], inclusive: bool = False) -> str:
        return encode_token(query, back, values, inclusive=inclusive, total=total)

    next_token = prev_token = ""
    if rows:
        if backwards:
            next_token = token(False, key_of(rows[-1]))
            if more:
                prev_token = token(True, key_of(rows[0]))
        else:
            if more:
                next_token = token(False, key_of(rows[-1]))
            if query.cursor is not None:
                prev_token = token(True, key_of(rows[0]))
    elif query.cursor is not None and not backwards:
        # past the end (rows deleted meanwhile): let the client step back to the page
        # that ends with the cursor's row
        prev_token = token(True, query.cursor.values, inclusive=True)
    return Page(rows, next_token, prev_token, total or 0)
