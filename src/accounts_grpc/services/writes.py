"""Writes, once for every service: idempotent creates, etags, conditional updates.

Idempotency (``request_id``): the key is (caller's account, method, request_id). The
key row is inserted *first* in the creating transaction, so of two concurrent calls
with one id the second blocks on it (PostgreSQL) or on the write lock (SQLite) and
then finds the first one's result; ``create_once`` retries once for that. The same id
with a different request is INVALID_ARGUMENT (REQUEST_ID_REUSED). The stored result
is the ids of what was created; a retry returns the resource as it is now (a secret
shown by the first response is not shown again: it is stored only as a hash).

A request_id is remembered for ``keep`` seconds (``--request-id-ttl``, 24 hours by
default; AIP-155 asks for at least one): a retry after that creates anew, and the
expired key rows are deleted, a bounded batch at a time, by the creates themselves (at
most once a minute per process and database; any server may, since a DELETE of expired
rows is the same on every one).

Conditional updates: a use case never holds a table. It passes its repository's
``update_if_etag`` (``uow.accounts.update_if_etag``, ``uow.users`` ...: ``UPDATE ...
WHERE id = :id AND etag = :old``) to ``conditional_update``, which stamps
``update_time`` and a fresh etag and turns a lost race into ABORTED (ETAG_MISMATCH); a
unique key lost inside ``constraint_guard`` is the caller's error or ABORTED
(CONCURRENT_CHANGE).

The rules are here; the statements are ``uow.idempotency``'s (the keys), the
repositories' (each one's ``update_if_etag``) and ``uow.conflicts``' (savepoints, lost
unique keys).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

from accounts_grpc.domain.errors import Aborted, AlreadyExists, DomainError, InvalidArgument
from accounts_grpc.domain.ports import Database, UnitOfWork, UpdateIfEtag
from accounts_grpc.domain.principal import Principal
from accounts_grpc.store import errors
from accounts_grpc.store.db import new_etag, new_id, now_us

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_REQUEST_ID = 200
DEFAULT_KEEP = 86400  # seconds a request_id is remembered
_US = 1_000_000
_PRUNE_EVERY = 60.0  # seconds between two prunes of one database by this process
_PRUNE_BATCH = 1000  # expired keys deleted by one prune (a short transaction)
_last_prune: weakref.WeakKeyDictionary[Database, float] = weakref.WeakKeyDictionary()
_prune_lock = threading.Lock()


def fingerprint(*parts: Any) -> str:
    """A stable hash of a request's meaningful content (not its request_id)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _key(p: Principal | None, method: str, request_id: str) -> str:
    scope = p.account_id if p else "-"
    return hashlib.sha256(f"{scope}\x00{method}\x00{request_id}".encode()).hexdigest()


def create_once(
    db: Database,
    principal: Principal | None,
    method: str,
    request_id: str,
    request_fingerprint: str,
    create: Callable[[UnitOfWork], Mapping[str, Any]],
    load: Callable[[UnitOfWork, Mapping[str, Any]], T],
    *,
    keep: int = DEFAULT_KEEP,
) -> tuple[T, bool]:
    """Run ``create`` (returns the new ids) once per request_id; returns (result, created).

    ``create`` must write its audit event itself; ``load`` turns ids into the result.
    Without a request_id it is a plain create in one transaction. ``keep``: seconds the
    request_id is remembered.
    """
    if len(request_id) > MAX_REQUEST_ID:
        raise InvalidArgument.field("request_id", f"must be at most {MAX_REQUEST_ID} characters")
    key = _key(principal, method, request_id) if request_id else None
    for attempt in range(2):
        with db.write() as uow:
            if key is not None:
                prior = uow.idempotency.find(key)
                if prior is not None and prior.create_time < now_us() - keep * _US:
                    uow.idempotency.forget(key)  # forgotten: this is a new request
                    prior = None
                if prior is not None:
                    if prior.fingerprint != request_fingerprint:
                        raise InvalidArgument.field(
                            "request_id",
                            "was already used for a different request",
                            reason="REQUEST_ID_REUSED",
                        )
                    return load(uow, prior.result), False
                if not uow.idempotency.claim(
                    key, method=method, fingerprint=request_fingerprint,
                    now=now_us(), raise_if_taken=attempt > 0,
                ):
                    continue  # a concurrent call with the same id won: read its result
            # a unique key lost to a concurrent writer: the client's mistake to retry or
            # rename, never INTERNAL (repositories should map these themselves)
            with uow.conflicts.unique_violations_as(_already_exists):
                ids = create(uow)
            if key is not None:
                uow.idempotency.record_result(key, ids)
            result = load(uow, ids)
            uow.commit()
        if key is not None:
            try:  # after the write lock is given back; best effort: the create is done
                prune_request_ids(db, keep)
            except errors.DatabaseError as e:
                log.warning("could not delete expired request ids: %s", errors.describe(e))
        return result, True
    raise AssertionError("unreachable")


def _already_exists() -> AlreadyExists:
    return AlreadyExists("the resource already exists", reason="ALREADY_EXISTS")


def prune_request_ids(db: Database, keep: int, *, force: bool = False) -> int:
    """Delete up to ``_PRUNE_BATCH`` request_id keys older than ``keep`` seconds, unless
    this process pruned ``db`` less than a minute ago; returns how many went."""
    now = time.monotonic()
    with _prune_lock:
        if not force and now - _last_prune.get(db, -_PRUNE_EVERY) < _PRUNE_EVERY:
            return 0
        _last_prune[db] = now
    with db.write() as uow:
        gone = uow.idempotency.prune(older_than=now_us() - keep * _US, limit=_PRUNE_BATCH)
        uow.commit()
    return gone


def check_etag(given: str, current: str, what: str = "resource") -> None:
    """AIP-154: a set etag must match the stored one, else ABORTED (ETAG_MISMATCH)."""
    if given and given != current:
        raise Aborted(
            f"the {what} was changed since it was read (etag mismatch); read it again and retry",
            reason="ETAG_MISMATCH",
            metadata={"current_etag": current},
        )


def conditional_update(
    update: UpdateIfEtag,
    row_id: str,
    old_etag: str,
    values: Mapping[str, Any],
    what: str = "resource",
) -> dict[str, Any]:
    """``update`` (a repository's ``update_if_etag``: UPDATE ... WHERE id = :id AND
    etag = :old) of the row ``row_id``; a concurrent writer makes it ABORTED.

    Sets ``update_time`` and a fresh ``etag``; returns the values written.
    """
    values = dict(values)
    values["update_time"] = now_us()
    values["etag"] = new_etag()
    if not update(row_id, old_etag, values):
        raise Aborted(
            f"the {what} was changed concurrently; read it again and retry", reason="ETAG_MISMATCH"
        )
    return values


def new_row(**values: Any) -> dict[str, Any]:
    """Column values of a new resource row: ``values`` plus a fresh ``id`` (unless given),
    ``create_time`` = ``update_time`` = now, and a fresh ``etag``."""
    now = now_us()
    row = {"id": new_id(), **values, "create_time": now, "update_time": now}
    row["etag"] = new_etag()
    return row


@contextmanager
def constraint_guard(
    uow: UnitOfWork, taken: Callable[[], DomainError | None] = lambda: None
) -> Iterator[None]:
    """Statements that a concurrent writer may beat to a unique key (PostgreSQL runs READ
    COMMITTED, so a pre-check can pass in two transactions at once): on a constraint
    violation the savepoint is rolled back and the loser gets ``taken()`` (e.g.
    ALREADY_EXISTS) or, if that finds nothing, ABORTED to retry -- never INTERNAL."""

    def lost() -> DomainError:
        return taken() or Aborted(
            "a concurrent change conflicted with this one; read again and retry",
            reason="CONCURRENT_CHANGE",
        )

    with uow.conflicts.savepoint(lost):
        yield
