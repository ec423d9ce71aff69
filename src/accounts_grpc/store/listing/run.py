"""``run_list``: one page of a list, its tokens and its ``total_size``.

Statements: every value is a bind parameter, so a service whose base statements are made
once (``run_list(params=...)``) gets the statements built on them kept per shape of
request (``_statements``, ``_BUILT``), and a call neither builds nor compiles SQL.

Reading the page (``_page_rows``), the generic path is ``conn.execute`` of the page; its
SQLite fast path packs the page into one JSON value, read in one step, because the
sqlite3 module releases and retakes the GIL around every row step (eight threads listing
a filtered page: 590-630 pages/s packed against 405-450 unpacked; the bench's filtered
ListAccounts 0.26-0.27 -> 0.34-0.38 x GetAccount), and a kept statement's packed page
runs compiled once on the DBAPI cursor (``_Statements.driver_packed``), as ``FastSelect``
does, sparing SQLAlchemy's work per execution (about as much as the statement itself).
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from accounts_grpc.domain.listing import ListQuery, Page, encode_token
from accounts_grpc.store.listing.filters import _Filter, _filter
from accounts_grpc.store.listing.plans import _count, _plan_indexed
from accounts_grpc.store.listing.spec import IndexScope, ListSpec
from accounts_grpc.store.rows import Record


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
            # (ListMyUserGroups in process 1.97 -> 1.59 ms)
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
        return list(conn.execute(built.page, values))  # the generic twin
    # fast path (SQLite): one step, one GIL take-back (8 threads: 405-450 -> 590-630 pages/s)
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


#: statements built for reusable base statements (``run_list(params=...)``), by shape: the
#: base's ``id()``, checked against the kept ``base`` itself (an id may be reused). Building
#: and compiling a page's statements costs more than running them (ListAccounts' page 1 in
#: process: 1.1 ms built each time, 0.2-0.3 ms kept); lists whose base statement is built
#: per call (no ``params``) build them anew, as the generic twin.
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
