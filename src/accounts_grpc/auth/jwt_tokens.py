"""JWT access tokens: issue, and verify with the algorithm pinned to the key's own.

Verification rejects, as UNAUTHENTICATED: a malformed token, an unknown ``kid`` (one
the KeyStore does not have even after re-reading the keys: keys.py), an
``alg`` other than the key's (so ``none`` and HS256-signed-with-the-public-key fail
before any signature check), a bad signature, a wrong ``iss`` or ``aud``, an ``exp`` in
the past, an ``iat`` in the future, and missing required claims. Verified tokens are
kept in a small LRU cache keyed by the raw token, each entry valid until the sooner of
the token's ``exp`` and ``jwt_cache_ttl`` seconds; the cache only skips the signature
check, never the per-call check of the user and account (see ``authenticate``).

A delegated token (ExchangeToken, RFC 8693) carries ``act`` (§4.1): ``{"sub": <the
acting user>, "account_id": <its account>, "gen": <its credential generation>}``; its
``sub`` and ``gen`` are the subject's, ``account_id`` the account it acts in, ``roles``
the delegated roles. ``actor_claim`` reads it back.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from accounts_grpc.auth.keys import KeyStore
from accounts_grpc.config import Settings
from accounts_grpc.domain.errors import Unauthenticated

LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ["iss", "sub", "aud", "iat", "exp", "jti"]


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    claims: dict[str, Any]


class _LRU:
    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, now: float) -> dict[str, Any] | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            if hit[0] <= now:
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return hit[1]

    def put(self, key: str, until: float, value: dict[str, Any]) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._data[key] = (until, value)
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


def _invalid(message: str, reason: str = "TOKEN_INVALID") -> Unauthenticated:
    return Unauthenticated(message, reason=reason)


def actor_claim(claims: dict[str, Any]) -> tuple[str, str, int] | None:
    """A delegated token's actor (RFC 8693 ``act``): (user id, account id, credential
    generation); None for a token without ``act``. Nested ``act`` (earlier actors) is
    never issued here, so one is refused like any malformed claim."""
    act = claims.get("act")
    if act is None:
        return None
    if (not isinstance(act, dict) or not isinstance(act.get("sub"), str)
            or not isinstance(act.get("account_id"), str)
            or not isinstance(act.get("gen", 0), int) or "act" in act):
        raise _invalid("the access token's act claim is malformed")
    return act["sub"], act["account_id"], int(act.get("gen", 0))


class JwtService:
    def __init__(self, keys: KeyStore, settings: Settings) -> None:
        self._keys = keys
        self._settings = settings
        self._cache = _LRU(settings.jwt_cache_size)

    def issue(self, *, user_id: str, account_id: str, roles: list[str], kind: str,
              client_id: str | None = None, lifetime: int | None = None,
              generation: int | None = None,
              act: dict[str, Any] | None = None) -> IssuedToken:
        """A signed JWT. ``generation`` (the user's ``credential_generation``) becomes the
        ``gen`` claim: our own verification (``authenticate``) refuses the token once the
        user's generation has moved on, i.e. once its client secret was rotated."""
        key = self._keys.signing_key()
        now = int(time.time())
        lifetime = lifetime or self._settings.token_lifetime
        if lifetime > self._settings.token_lifetime:  # the key must outlive this token too
            self._keys.record_lifetime(key, lifetime)
        claims: dict[str, Any] = {
            "iss": self._settings.issuer,
            "sub": user_id,
            "aud": self._settings.audience,
            "iat": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
            "account_id": account_id,
            "roles": sorted(roles),
            "kind": kind,
        }
        if client_id:
            claims["client_id"] = client_id
        if generation is not None:
            claims["gen"] = generation
        if act is not None:
            claims["act"] = act
        assert key.private_key is not None  # signing_key() never returns one without
        token = jwt.encode(claims, key.private_key, algorithm=key.alg, headers={"kid": key.kid})
        return IssuedToken(token, lifetime, claims)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or Unauthenticated saying why not."""
        now = time.time()
        cached = self._cache.get(token, now)
        if cached is not None:
            return cached
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("the access token is malformed") from None
        kid = header.get("kid")
        alg = header.get("alg")
        if not isinstance(kid, str) or not kid:
            raise _invalid("the access token has no key id (kid)")
        key = self._keys.verification_key(kid)
        if key is None:
            raise _invalid("the access token is signed with an unknown key", "TOKEN_UNKNOWN_KEY")
        if alg != key.alg:
            raise _invalid("the access token's algorithm does not match its key", "TOKEN_INVALID")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public_key,
                algorithms=[key.alg],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("the access token has expired", "TOKEN_EXPIRED") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("the access token is not valid yet (iat/nbf in the future)") from None
        except jwt.InvalidAudienceError:
            raise _invalid("the access token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise _invalid("the access token is from another issuer") from None
        except jwt.MissingRequiredClaimError as e:
            raise _invalid(f"the access token lacks the {e.claim!r} claim") from None
        except jwt.PyJWTError:
            raise _invalid("the access token's signature does not verify") from None
        if not isinstance(claims.get("sub"), str):
            raise _invalid("the access token's subject is not a user id")
        until = min(float(claims["exp"]), now + self._settings.jwt_cache_ttl)
        self._cache.put(token, until, claims)
        return claims
