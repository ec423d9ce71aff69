"""A list's ``filter`` in SQL: every term, case-insensitively, in some searchable column.

Spelled per dialect, each fast path beside its generic twin (measured on SQLite 3.40,
100,000 accounts seeded as bench/seed.py does, a term in 1% of them):

- ``_contains_ci``: a term tested on the rows, ``lower(col) LIKE`` anywhere, ``ILIKE``
  on PostgreSQL (served by migration 0002's pg_trgm GIN indexes), plain ``LIKE`` on
  SQLite, whose LIKE already ignores ASCII case as its ``lower()`` folds it: the count
  of the matches 17 ms instead of 31.
- ``_filter``: on SQLite a spec with a ``SearchIndex`` is served by its FTS5 trigram
  index (terms of 3+ characters) and ``LIKE`` over every spelling FTS5 folds alike
  (shorter ones, ``_fts_fold_variants``), so no row is read to find the hits: the count
  1.1 ms instead of 17 by ``LIKE``, page 1 with its count 2.4 ms instead of 38 (a term
  of 2 characters has no trigram and costs what ``LIKE`` does). Elsewhere every term is
  tested on the rows.

A filter is its bind parameters' values and its shape (``_Filter``): a statement built
for one shape serves every filter of that shape (``run._statements``).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import BindParameter, ColumnElement

from accounts_grpc.store.listing.spec import MARK, IndexScope, ListSpec, PagePlan, SearchIndex


def _like_escape(term: str) -> str:
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _contains_ci(col: ColumnElement[Any], pattern: Any, dialect: str | None) -> Any:
    """``col`` contains the lower-case ``pattern``, ignoring case, as cheaply as the
    database allows: SQLite's LIKE already ignores (ASCII) case, exactly as its lower()
    folds it; PostgreSQL has ILIKE; elsewhere lower() LIKE."""
    if dialect == "sqlite":
        # fast path: no lower() on each row (a 1% term counted in 100,000 rows: 31 -> 17 ms)
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
    itself (named bind parameters) is built only when a statement is (``clause``): it was
    12% of the GIL time of a filtered ListAccounts under load."""

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
        # fast path: the index finds the hits, no row is read to test them (100,000 rows,
        # a 1% term: its count 17 -> 1.1 ms; page 1 and its count 38 -> 2.4 ms).
        # The SQLite FTS5 spelling (see ``SearchIndex``), as ``plan`` has it
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
    # the generic spelling: every term tested on the rows (``_contains_ci``)
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
