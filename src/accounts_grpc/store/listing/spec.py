"""What a list is made of: its ``ListSpec`` (columns, search index, kept counts), and
the names of the scopes and page plans the rest of the package passes around."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

if TYPE_CHECKING:
    from accounts_grpc.domain.listing import ListShape


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
    (searchable ones may be NULL: NULL matches no term). It is the ``ListShape`` the
    domain's rules read (``parse_list_request(spec, ...)``), with the SQL behind it."""

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


#: How a page of a filter the SQLite index answers alone is read (``_plan_indexed``):
#: "hits" SQLite reads the hits by rowid and sorts them; "walk" it walks the order's
#: index and tests each entry against the hits, collected first; "scan" it walks the
#: order's index and tests each row with LIKE. Both walks stop at a full page.
PagePlan = Literal["hits", "walk", "scan"]


if TYPE_CHECKING:
    _SHAPE: type[ListShape] = ListSpec  # mypy: a ListSpec is what the domain's rules read
