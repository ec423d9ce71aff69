"""How a list's size is counted and, where the SQLite index counts it, how its page is read.

The generic count is ``_count``: ``count(*)`` over the filtered list, once, for the first
page (``run.run_list`` carries it in the tokens). Beside it its fast paths:

- SQLite, ``_plan_indexed``: a filter the FTS5 index answers alone over a whole of the
  table (``IndexScope``) is counted in the index without reading a row, and the count
  picks the page's plan (``PagePlan``); a term in every row of 100,000 accounts: page 2
  1 ms instead of 52, page 1 48 ms instead of 94 (the cost constants below).
- PostgreSQL, in ``_count``: the count of a filtered list plans with an SSD's
  ``random_page_cost``, so the pg_trgm index serves it (a 1% filter: 84 ms -> 11 ms).

(A first page that counts its matches in its own statement, by a window count, was
tried and reverted: SQLite sorts the matches twice, 8.7 ms against 4.6 + 4.3 ms for
page and count.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from accounts_grpc.domain.listing import ListQuery
from accounts_grpc.store.listing.filters import (
    _fts_fold_variants,
    _fts_match,
    _long_terms,
    _matches,
)
from accounts_grpc.store.listing.spec import IndexScope, ListSpec, PagePlan, SearchIndex

#: PostgreSQL's cost of a random page read for the count of a filtered list. The default,
#: 4, models spinning disks, and with it the planner counts a pg_trgm-filtered list by
#: reading the whole table even where the trigram index finds the hits far sooner (100,000
#: accounts, PostgreSQL 15, SSD: a 1% filter 84 ms by a scan, 11 ms by the index; 5%: 87
#: and 17 ms). With 1.1, the usual value for SSDs, it picks the index for those and still
#: scans a filter that matches every row (90 ms, against 154 ms by an index).
_PG_COUNT_PAGE_COST = "1.1"


def _count(conn: sa.Connection, count: sa.Select[Any], values: Mapping[str, Any], *,
           filtered: bool) -> int:
    """The generic count: ``count(*)`` of the (filtered) list."""
    if filtered and conn.dialect.name == "postgresql" and conn.in_transaction():
        # fast path (PostgreSQL): the pg_trgm index counts a filter (1%: 84 -> 11 ms),
        # for this read's transaction only (set_config(..., true) is SET LOCAL)
        conn.execute(sa.select(sa.func.set_config("random_page_cost", _PG_COUNT_PAGE_COST,
                                                  True)))
    return int(conn.execute(count, values).scalar_one())


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
    # fast path (SQLite): counted in the index, no row read, and the count picks the page
    # (a term in every row of 100,000: page 2 52 -> 1 ms, page 1 94 -> 48 ms); None: the
    # generic twin, ``_count`` and the "hits" page
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
