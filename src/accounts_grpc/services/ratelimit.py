"""Failed client-credential attempts, counted in the database so every server sharing it
shares the limits.

The policy. A CreateToken attempt's address is the peer of the gRPC call, or of the HTTP
request when the REST token endpoint calls the same use case; behind proxies named by
``--trusted-proxies``, the address their X-Forwarded-For gives (see
``rpc.pipeline.client_address``). Only *failed* attempts count, on three counters, each
bounded on its own within ``auth_failure_window`` seconds:

1. the client id at the address (``auth_max_failures``, default 10): the ordinary
   lockout. A deployment running with a stale secret locks out only itself, at its own
   address; other clients at that address, and the same client elsewhere, go on.
2. the address, whatever the client ids (``auth_max_failures_per_address``, default
   100): stops a scanner trying many client ids from one address. It is 10 times the
   first because many honest clients may share one address (a NAT, a pod's egress).
3. the client id, from any address (``auth_max_failures_per_client``, default 100):
   bounds a guesser who spreads its guesses over many addresses.

A counter that reaches its bound is blocked for ``auth_block_seconds``: while any counter
of an attempt is blocked, the attempt is refused with RESOURCE_EXHAUSTED, reason
TOO_MANY_FAILED_ATTEMPTS (``google.rpc.RetryInfo`` says when to retry, REST: 429 with
Retry-After), *before* the secret is checked, so a blocked guesser learns nothing from
guesses it keeps making. The refusal says "this client or address", never which counter.
A bound of 0 turns its counter off; ``auth_max_failures = 0`` turns the whole limiter off
(the other two bounds as well). An attempt without a client id counts on its address
alone; a call without a known address (in process) counts on its client id, and on the
client id at "no address".

The trade-off, as with every lockout (Keycloak's brute-force detection, which disables a
user for a while after failed logins, documents the same one): client ids are not
secret, so a stranger who knows one can get that client refused everywhere by failing on
purpose. It takes ``auth_max_failures_per_client`` failures within the window (by
default 100, ten times the pair bound, where a single shared bound of 10 used to do it),
and it lasts ``auth_block_seconds``, after which the stranger must start again; it never
costs the client its credentials. A stranger sharing the client's address can also block
that address, with ``auth_max_failures_per_address`` failures. Without the client-wide
counter, a guesser with many addresses would get ``auth_max_failures`` guesses per
address per window, without end; but secrets are 256-bit random, so guessing one is
hopeless either way: the bounds limit the load and the noise, not the odds. An operator
who would rather have no client-wide lockout sets ``auth_max_failures_per_client = 0``.

Atomic: an attempt is *reserved* before its secret is checked. In one write transaction,
ONE statement counts it up on all its counters (``uow.rate_limits``: a multi-row
``INSERT ... ON CONFLICT DO UPDATE ... WHERE not blocked RETURNING``, each row with its
own limit) and returns the counters it could count; if one is missing, it is blocked and
the attempt is refused (rolled back: nothing counted). Then the secret is checked; a
failure commits the reservation, a success rolls it back (successes count nothing). The
transaction holds the counters' rows (PostgreSQL row locks, taken in key order; SQLite's
one writer) while the secret is checked, so concurrent attempts on one counter are
checked one after another against the committed count: of 150 concurrent wrong guesses
that share a counter, at most its bound are ever checked, on every server sharing the
database.

A counter whose window has passed, or whose block has ended, starts afresh at its next
failure. Stale rows are pruned now and then on the failure path.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from accounts_grpc.config import Settings
from accounts_grpc.domain.errors import ResourceExhausted
from accounts_grpc.domain.ports import Database, ReadUnitOfWork, UnitOfWork
from accounts_grpc.store.db import now_us

__all__ = ["ADDRESS", "CLIENT", "PAIR", "Attempt", "FailureLimiter"]

#: the three counters' kinds, the prefixes of their keys
PAIR, ADDRESS, CLIENT = "pair", "addr", "client"

_MAX_KEY_PART = 100  # rate_limits.key is 128 characters
_US = 1_000_000


def _key(kind: str, value: str) -> str:
    if len(value) <= _MAX_KEY_PART and value.isprintable():
        return f"{kind}:{value}"
    return f"{kind}#" + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()[:64]


def _pair(client_id: str, address: str) -> str:
    """``<client id>@<address>``, read back by the last "@": one in the address is
    escaped (addresses have none, but nothing here depends on that)."""
    if "@" in address or "%" in address:
        address = address.replace("%", "%25").replace("@", "%40")
    return f"{client_id}@{address}"


class Attempt:
    """A reserved attempt: check the secret in ``uow``; ``succeeded()`` if it matched."""

    __slots__ = ("ok", "uow")

    def __init__(self, uow: ReadUnitOfWork) -> None:
        self.uow = uow
        self.ok = False

    def succeeded(self) -> None:
        self.ok = True


def _kind(key: str) -> str:
    for i, ch in enumerate(key):
        if ch in ":#":
            return key[:i]
    return key


class FailureLimiter:
    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._enabled = settings.auth_max_failures > 0
        self._limits = {
            PAIR: settings.auth_max_failures,
            ADDRESS: settings.auth_max_failures_per_address,
            CLIENT: settings.auth_max_failures_per_client,
        }
        self._window_us = settings.auth_failure_window * _US
        self._block_us = settings.auth_block_seconds * _US
        self._prune_every = max(60.0, float(settings.auth_failure_window))
        self._last_prune = 0.0
        self._prune_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._enabled

    @staticmethod
    def keys(client_id: str, address: str | None) -> list[str]:
        """The counters an attempt touches, sorted: its client id at its address, its
        address (when known), its client id (when given)."""
        out = []
        if client_id:
            out.append(_key(PAIR, _pair(client_id, address or "")))
            out.append(_key(CLIENT, client_id))
        if address:
            out.append(_key(ADDRESS, address))
        return sorted(out)

    def limits(self, keys: Sequence[str]) -> dict[str, int]:
        """Each of ``keys`` whose counter is on, with its limit (none when the limiter
        is off)."""
        if not self._enabled:
            return {}
        out = {}
        for k in keys:
            kind = _kind(k)
            if kind not in self._limits:
                raise ValueError(f"not a rate-limit key: {k!r}")
            if self._limits[kind] > 0:
                out[k] = self._limits[kind]
        return out

    @contextmanager
    def attempt(self, keys: Sequence[str]) -> Iterator[Attempt]:
        """One client-credential attempt: reserve it against every key, or raise
        RESOURCE_EXHAUSTED (nothing counted) if a key is blocked; the body checks the
        secret in ``Attempt.uow`` and calls ``succeeded()`` if it matched. A failed
        attempt is committed as a failure; a successful one is rolled back."""
        limits = self.limits(keys)
        if not limits:
            with self._db.read() as reader:
                yield Attempt(reader)
            return
        with self._db.write() as uow:
            now = now_us()
            blocked = uow.rate_limits.reserve(limits, now=now, window_us=self._window_us,
                                              block_us=self._block_us)
            if blocked:
                self._refuse(uow.rate_limits.blocked_until(blocked) or now, now)
            at = Attempt(uow)
            yield at
            if not at.ok:
                self._maybe_prune(uow)
                uow.commit()

    @staticmethod
    def _refuse(until: int, now: int) -> None:
        retry_after = max(1, math.ceil((until - now) / _US))
        raise ResourceExhausted(
            "too many failed attempts for this client or address; "
            f"retry in {retry_after} seconds",
            retry_after=retry_after,
            reason="TOO_MANY_FAILED_ATTEMPTS",
        )

    def _maybe_prune(self, uow: UnitOfWork) -> None:
        mono = time.monotonic()
        with self._prune_lock:
            if mono - self._last_prune < self._prune_every:
                return
            self._last_prune = mono
        uow.rate_limits.prune(now=now_us(), window_us=self._window_us)
