"""Use cases of the change feed: WatchEvents, the feed cursor, and revocation events.

- **Cursor.** An event's feed position (``seq``, increasing in commit order: store/audit.py)
  as base64url of a version byte, the position and an 8-byte HMAC under a secret derived
  from the key-encryption key: opaque to clients, the same on every server of the
  deployment (so a stream moves to another server), and a cursor made elsewhere (or
  edited) is INVALID_ARGUMENT. Empty or ``"now"``: after the newest event.
- **Who reads what.** ``account-admin``: its own account's events (or, by
  ``policy.Action.AUDIT_READ``, an account it may read the log of); ``admin`` and
  ``admin-reader``: one account's, or every account's and the platform's (``account_id``
  empty in the event: a retired signing key).
- **Streaming.** ``watch`` checks the request and the caller, subscribes to the process's
  one poller (services/feed.py), catches up from the database past the cursor, then hands
  out what the poller reads; each step yields a (possibly empty) batch at least every
  ``HEARTBEAT`` seconds, so the transport can notice a client that has gone. Every
  ``watch_recheck_interval`` the caller's token is authenticated again (a revoked,
  deleted or expired caller: UNAUTHENTICATED) and its right to read checked again. A
  draining server ends every stream with UNAVAILABLE (resume elsewhere from the last
  cursor).
- **Revocations.** ``revocation(...)`` (store/audit.py, named here for the use cases)
  is what a use case passes to ``uow.audit.record`` when its change makes still-valid
  tokens invalid (see ``Revocation`` in audit_event.proto for how a verifier matches
  tokens).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

from accounts_grpc.auth.authenticate import bearer_token
from accounts_grpc.domain import policy
from accounts_grpc.domain.call import current_call
from accounts_grpc.domain.errors import InvalidArgument, Unavailable, not_found
from accounts_grpc.domain.principal import Principal
from accounts_grpc.domain.validate import check_id
from accounts_grpc.services.account_fields import target_of
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.feed import BATCH, FeedHub, Subscription
from accounts_grpc.store.audit import (  # what use cases name in a revocation
    ACCOUNT_CLOSED,
    CREDENTIALS_ROTATED,
    DEVICE_PERMISSION_REMOVED,
    GROUP_MEMBERSHIP_CHANGED,
    ROLES_CHANGED,
    SESSION_REVOKED,
    SIGNING_KEY_RETIRED,
    USER_DELETED,
    revocation,
)

__all__ = ["ACCOUNT_CLOSED", "CREDENTIALS_ROTATED", "DEVICE_PERMISSION_REMOVED",
           "GROUP_MEMBERSHIP_CHANGED", "ROLES_CHANGED", "SESSION_REVOKED",
           "SIGNING_KEY_RETIRED", "USER_DELETED", "EventsService", "revocation"]

#: seconds a stream waits for events before it yields an empty batch
HEARTBEAT = 1.0
NOW = "now"
_VERSION = 1
_MAC_BYTES = 8


class EventsService:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self._key = hmac.new(deps.page_secret, b"accounts-grpc/feed-cursor",
                             hashlib.sha256).digest()
        self.hub = FeedHub(deps.db, deps.settings.feed_poll_interval)

    def close(self) -> None:
        """The server drains: open streams end (UNAVAILABLE), new ones are refused."""
        self.hub.close()

    # -- cursors ---------------------------------------------------------------------------
    def cursor(self, position: int) -> str:
        body = bytes([_VERSION]) + position.to_bytes(8, "big")
        mac = hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode()

    def position(self, cursor: str) -> int | None:
        """The position a cursor names; None for "now" (or empty)."""
        if cursor in ("", NOW):
            return None
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        body, mac = raw[:9], raw[9:]
        good = hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]
        if len(raw) != 9 + _MAC_BYTES or body[0] != _VERSION or not hmac.compare_digest(
                mac, good):
            raise InvalidArgument.field(
                "cursor", 'is not a cursor of this service (use an event\'s cursor, a '
                'ListAuditEvents next_cursor, or "now")', reason="INVALID_CURSOR")
        return int.from_bytes(body[1:], "big")

    def newest_cursor(self) -> str:
        """The feed's newest position now (ListAuditEvents' ``next_cursor``, read before
        its page, so that watching from it misses nothing the page lacks)."""
        with self.deps.db.read() as uow:
            return self.cursor(uow.audit.newest_position())

    # -- WatchEvents ------------------------------------------------------------------------
    def _scope(self, p: Principal, account_id: str) -> str | None:
        """The one account whose events ``p`` streams, or None for every account."""
        if not account_id:
            if p.is_platform_reader:
                return None
            account_id = p.account_id
        check_id("account_id", account_id)
        with self.deps.db.read() as uow:
            row = uow.accounts.get(account_id)
        if row is None:
            raise not_found("account", "id", account_id)
        policy.require(p, policy.Action.AUDIT_READ, target_of(row), what="account",
                       key=account_id)
        return account_id

    def watch(self, p: Principal, account_id: str, cursor: str) -> Iterator[list[Any]]:
        """Check the request and the caller now (errors are raised here, before the
        stream starts), then the stream: batches of events in feed order."""
        start = self.position(cursor.strip())
        scope = self._scope(p, account_id)
        call = current_call()
        authorization = call.metadata.get("authorization", "") if call else ""
        sub = self.hub.subscribe()
        if start is None:
            with self.deps.db.read() as uow:
                start = uow.audit.newest_position()
        return self._stream(sub, start, scope, account_id, authorization)

    def _stream(self, sub: Subscription, last: int, scope: str | None, asked: str,
                authorization: str) -> Iterator[list[Any]]:
        recheck = self.deps.settings.watch_recheck_interval
        next_check = time.monotonic() + recheck
        catch_up = True
        try:
            while True:
                if catch_up or sub.lagging:
                    sub.caught_up()  # what is offered from now on is queued again
                    for batch in self._catch_up(last, scope):
                        last = batch[-1].seq
                        yield batch
                    catch_up = False
                if sub.closed:
                    raise Unavailable("the server is stopping: resume from the last cursor "
                                      "(on another server)", reason="SHUTTING_DOWN")
                fresh = [e for e in sub.take(HEARTBEAT) if e.seq > last]
                if fresh:
                    last = fresh[-1].seq
                yield [e for e in fresh if scope is None or e.account_id == scope]
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + recheck
                    q = self.deps.authn.principal_for_token(bearer_token(authorization),
                                                            touch=False)
                    self._scope(q, asked)
        finally:
            sub.close()

    def _catch_up(self, last: int, scope: str | None) -> Iterator[list[Any]]:
        while True:
            with self.deps.db.read() as uow:
                batch = uow.audit.after(last, limit=BATCH, account_id=scope)
            if batch:
                yield batch
            if len(batch) < BATCH:
                return
            last = batch[-1].seq
