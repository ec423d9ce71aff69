"""Lists, once for every service (AIP-132 / AIP-158): the rules of a list request.

A request is parsed into a ``ListQuery`` (validated page size, filter terms, order,
cursor) against the ``ListShape`` of its list (its name, the fields it may be ordered
by); the store runs it (``accounts_grpc.store.listing.run_list``, whose ``ListSpec`` is a
``ListShape`` with the columns and indexes behind it) and returns a ``Page``. Nothing
here knows of SQL.

- ``page_size``: 0 means 50, above 1000 is coerced to 1000, negative is INVALID_ARGUMENT.
- Keyset paging: the page token holds the sort-key values of the row it continues from,
  so page 1,000 costs what page 1 costs and rows inserted meanwhile are neither skipped
  nor repeated. Ties are broken by ``id``.
- Tokens are opaque and tamper-evident: base64url(JSON payload + HMAC-SHA256). Each is
  bound to its query (filter, order, scope): reused with another, INVALID_ARGUMENT.
- ``previous_page_token`` pages backwards; empty on the first page, as
  ``next_page_token`` is empty on the last.
- ``filter``: free-text terms, ``"quoted phrases"`` kept whole; every term must occur,
  case-insensitively, in one of the list's search columns (FlexMeasures semantics).
- ``order_by``: ``"name"``, ``"name desc"``, ``"create_time desc, name"`` ...; an unknown
  field is INVALID_ARGUMENT with a field violation.
- ``total_size`` is counted when the first page is read and carried, tamper-evident, in
  the page tokens (``Cursor.total``): exact for the first page, and for later pages the
  count as of the first page (AIP-158 allows an estimate), so that no page but the first
  pays for a scan of every matching row.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from accounts_grpc.domain.errors import InvalidArgument
from accounts_grpc.domain.validate import shorten

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_FILTER_LENGTH = 1000
MAX_FILTER_TERMS = 20
_TOKEN_VERSION = 1
_MAC_BYTES = 16


class ListShape(Protocol):
    """What the rules of a list read of it: the store's ``ListSpec`` is one."""

    @property
    def resource(self) -> str:
        """Names the list in its tokens (e.g. ``"accounts"``)."""
        ...

    @property
    def orderable(self) -> Collection[str]:
        """The fields ``order_by`` may name."""
        ...

    @property
    def default_order(self) -> tuple[tuple[str, bool], ...]:
        """(field, descending) pairs, for an empty ``order_by``."""
        ...


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


def parse_order_by(spec: ListShape, text: str) -> tuple[tuple[str, bool], ...]:
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
    spec: ListShape,
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
    spec: ListShape,
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
