"""The signing keys (table ``signing_keys``) in the store: ``uow.signing_keys``.

The rules (phases, the publish lead, lifetimes, caching, encryption) live in
auth/keys.py; here is the SQL. Times are microseconds since the epoch; the caller
passes ``now``, and the expiry margin (``margin_seconds``), which are its to decide.

A retired key leaves the JWKS at ``retire_time + max_token_lifetime +
max_cache_seconds + margin_seconds``: computed in SQL, from the row's own values, by
whichever statement comes later, ``retire_current`` (a rotation) or ``record_uses``
(a server records its lifetime and caches on the key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from accounts_grpc.store.rows import Repository
from accounts_grpc.store.tables import signing_keys

__all__ = ["SigningKeys"]

_c = signing_keys.c


def _not_expired(now: int) -> sa.ColumnElement[bool]:
    return sa.or_(_c.expire_time.is_(None), _c.expire_time > now)


class SigningKeys(Repository):
    """The signing keys every server shares (see the module docstring)."""

    __slots__ = ()

    def live(self, *, now: int) -> Sequence[sa.Row[*tuple[Any, ...]]]:
        """Every key not expired at ``now``, every column, the latest to activate first."""
        return self.conn.execute(
            sa.select(signing_keys)
            .where(_not_expired(now))
            .order_by(_c.activate_time.desc(), _c.create_time.desc(), _c.kid)
        ).all()

    def lock_live(self, *, now: int) -> Sequence[sa.Row[*tuple[Any, ...]]]:
        """In a write transaction that may create a key: on PostgreSQL, lock the table
        against other servers creating one (SQLite's write transactions hold the database
        lock already); then the keys not expired at ``now`` (``kid``, ``activate_time``,
        ``retire_time``, ``max_cache_seconds``, ``private_key_enc``)."""
        if self.conn.dialect.name == "postgresql":
            self.conn.exec_driver_sql("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
        return self.conn.execute(
            sa.select(_c.kid, _c.activate_time, _c.retire_time, _c.max_cache_seconds,
                      _c.private_key_enc)
            .where(_not_expired(now))
        ).all()

    def retire_current(self, *, at: int, margin_seconds: int) -> None:
        """Every key not retired retires at ``at``; each one's expiry follows from its own
        recorded lifetime and caches."""
        self.conn.execute(
            signing_keys.update()
            .where(_c.retire_time.is_(None))
            .values(retire_time=at,
                    expire_time=_expiry(sa.literal(at, sa.BigInteger), _c.max_token_lifetime,
                                        _c.max_cache_seconds, margin_seconds))
        )

    def retire_now(self, kid: str, *, now: int) -> None:
        """Take ``kid`` out of the JWKS at ``now`` (``keys retire``); a key still pending
        after it (the next one) signs from ``now`` instead."""
        self.conn.execute(signing_keys.update().where(_c.kid == kid).values(
            retire_time=sa.case((_c.retire_time.is_(None), now), (_c.retire_time > now, now),
                                else_=_c.retire_time),
            expire_time=now))
        self.conn.execute(signing_keys.update()
                          .where(_c.kid != kid, _c.retire_time.is_(None), _c.activate_time > now)
                          .values(activate_time=now))

    def insert(self, values: Mapping[str, Any]) -> None:
        self.conn.execute(signing_keys.insert().values(**values))

    def record_uses(self, kids: Iterable[str], *, lifetime: int, cache_seconds: int,
                    margin_seconds: int) -> None:
        """Raise each key's ``max_token_lifetime`` and ``max_cache_seconds`` to these
        (never lower them), and a retired key's ``expire_time`` with them."""
        for kid in kids:
            self.conn.execute(_record_stmt(kid, lifetime, cache_seconds, margin_seconds))


def _expiry(retire_time: Any, lifetime: Any, cache: Any, margin_seconds: int) -> Any:
    """SQL: when a key retired at ``retire_time`` leaves the JWKS (see module doc)."""
    seconds = sa.cast(lifetime, sa.BigInteger) + cache + margin_seconds
    return retire_time + seconds * 1_000_000


def _record_stmt(kid: str, lifetime: int, cache: int, margin_seconds: int) -> sa.Update:
    new_lifetime = sa.case((_c.max_token_lifetime < lifetime, lifetime),
                           else_=_c.max_token_lifetime)
    new_cache = sa.case((_c.max_cache_seconds < cache, cache), else_=_c.max_cache_seconds)
    computed = _expiry(_c.retire_time, new_lifetime, new_cache, margin_seconds)
    new_expire = sa.case(
        (_c.retire_time.is_(None), _c.expire_time),
        (_c.expire_time >= computed, _c.expire_time),
        else_=computed,
    )
    return (signing_keys.update().where(_c.kid == kid)
            .values(max_token_lifetime=new_lifetime, max_cache_seconds=new_cache,
                    expire_time=new_expire))
