"""Lists, once for every service (AIP-132 / AIP-158), evaluated in SQL.

A list is described by a ``ListSpec`` (which fields may be ordered by, which are searched
by ``filter``); the domain parses a request into a ``ListQuery`` against it
(``accounts_grpc.domain.listing.parse_list_request``: page size, filter terms, order,
the opaque page tokens); ``run_list`` executes it on a Core ``Select`` that already
carries the caller's scope and returns a ``Page``.

- ``spec``: ``ListSpec``, the SQLite ``SearchIndex`` serving a filter, the ``IndexScope``
  a base statement may name, the ``PagePlan`` of an index-counted filter.
- ``filters``: the filter's SQL per dialect (``filter_clause``).
- ``plans``: the count, and on SQLite the index's count and the page plan it picks.
- ``run``: ``run_list``, the statements built once per shape, the page read.

Where the work happens:

- ``filter``: on SQLite a spec with a ``SearchIndex`` is served by an FTS5 trigram index;
  PostgreSQL's ``ILIKE`` is served by pg_trgm GIN indexes where migration 0002 could make
  them. When the list is a whole of the SQLite index (``IndexScope``: every account, or
  every open one) the index alone counts the hits, and the count picks the page's plan.
- ``total_size`` is counted when the first page is read (not at all when the first page
  holds every row) and carried in the page tokens. An unfiltered list of a whole of the
  table (``IndexScope``) whose spec has a count the database keeps
  (``ListSpec.kept_counts``) does not count at all: the page's own statement reads the
  kept count, so page 1 of 100,000 rows costs what page 1 of 20 does, and its total is
  exact as of the very snapshot the page was read in.

The fast paths, each in one place beside its generic twin, with its reason and gain
(SQLite 3.40 / PostgreSQL 15, 100,000 accounts):

- ``filters._contains_ci``: SQLite ``LIKE`` (it folds ASCII case itself) for
  ``lower(col) LIKE``; a 1% term counted 31 -> 17 ms. PostgreSQL ``ILIKE``, pg_trgm.
- ``filters._filter``: SQLite's FTS5 trigram index finds the hits instead of a test of
  every row; a 1% term counted 17 -> 1.1 ms, page 1 with its count 38 -> 2.4 ms.
- ``plans._plan_indexed``: SQLite counts an index-answered filter in the index and picks
  the page's plan from the count, for ``plans._count``'s ``count(*)`` and the "hits"
  page; a term in every row: page 2 52 -> 1 ms, page 1 94 -> 48 ms.
- ``plans._count``: PostgreSQL counts a filter with an SSD's ``random_page_cost``, so
  the pg_trgm index serves it; a 1% filter 84 -> 11 ms.
- ``run._page_rows``: SQLite reads a page packed in one JSON value, one step and one
  GIL take-back, for ``conn.execute(page)``; 8 threads 405-450 -> 590-630 pages/s.
"""

from accounts_grpc.store.listing.filters import filter_clause
from accounts_grpc.store.listing.run import run_list
from accounts_grpc.store.listing.spec import MARK, IndexScope, ListSpec, PagePlan, SearchIndex

__all__ = [
    "MARK",
    "IndexScope",
    "ListSpec",
    "PagePlan",
    "SearchIndex",
    "filter_clause",
    "run_list",
]
