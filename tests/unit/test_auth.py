"""Authentication rules without I/O: JWT verification (against an in-memory key set),
bearer parsing, secret hashing, log redaction, rate-limit keys."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from accounts_grpc import logs
from accounts_grpc.auth import secrets
from accounts_grpc.auth.authenticate import bearer_token
from accounts_grpc.auth.jwt_tokens import JwtService
from accounts_grpc.auth.keys import SigningKey, _public_jwk
from accounts_grpc.config import Settings
from accounts_grpc.domain.errors import Unauthenticated

PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class MemoryKeys:
    """What JwtService needs of a KeyStore, in memory; counts key look-ups."""

    def __init__(self) -> None:
        self.key = SigningKey("k1", "RS256", _public_jwk("k1", "RS256", PRIVATE),
                              PRIVATE.public_key(), PRIVATE, 0, None, None)
        self.lookups = 0

    def signing_key(self) -> SigningKey:
        return self.key

    def verification_key(self, kid: str) -> SigningKey | None:
        self.lookups += 1
        return self.key if kid == self.key.kid else None


@pytest.fixture
def keys() -> MemoryKeys:
    return MemoryKeys()


def service(keys: MemoryKeys, **kw: Any) -> JwtService:
    return JwtService(keys, Settings(**kw))  # type: ignore[arg-type]


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    c = {"iss": "accounts-grpc", "sub": "u1", "aud": "accounts-grpc", "iat": now,
         "exp": now + 60, "jti": "j1", "account_id": "a1", "roles": ["member"]}
    c.update(changes)
    return {k: v for k, v in c.items() if v is not None}


def sign(c: dict[str, Any], kid: str = "k1") -> str:
    return jwt.encode(c, PRIVATE, algorithm="RS256", headers={"kid": kid})


def b64(d: dict[str, Any]) -> str:
    return jwt.utils.base64url_encode(json.dumps(d).encode()).decode()


def reason(js: JwtService, token: str) -> str:
    with pytest.raises(Unauthenticated) as e:
        js.verify(token)
    return e.value.reason


def test_issue_then_verify(keys: MemoryKeys) -> None:
    js = service(keys, token_lifetime=120)
    issued = js.issue(user_id="u1", account_id="a1", roles=["member", "admin"],
                      kind="MACHINE", client_id="cid_1")
    assert issued.expires_in == 120
    c = js.verify(issued.token)
    assert c["sub"] == "u1" and c["roles"] == ["admin", "member"] and c["client_id"] == "cid_1"
    assert c["exp"] - c["iat"] == 120
    assert jwt.get_unverified_header(issued.token) == {"alg": "RS256", "kid": "k1",
                                                      "typ": "JWT"}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"exp": int(time.time()) - 100}, "TOKEN_EXPIRED"),
        ({"iat": int(time.time()) + 600, "exp": int(time.time()) + 900}, "TOKEN_INVALID"),
        ({"iss": "evil"}, "TOKEN_INVALID"),
        ({"aud": "evil"}, "TOKEN_INVALID"),
        ({"jti": None}, "TOKEN_INVALID"),
        ({"sub": 42}, "TOKEN_INVALID"),
    ],
)
def test_claims_are_checked(keys: MemoryKeys, changes: dict[str, Any], expected: str) -> None:
    assert reason(service(keys), sign(claims(**changes))) == expected


def test_leeway_is_30_seconds(keys: MemoryKeys) -> None:
    now = int(time.time())
    assert service(keys).verify(sign(claims(iat=now - 100, exp=now - 20)))["sub"] == "u1"
    assert reason(service(keys), sign(claims(iat=now - 100, exp=now - 40))) == "TOKEN_EXPIRED"


def test_the_algorithm_is_pinned_to_the_key(keys: MemoryKeys) -> None:
    js = service(keys)
    pem = PRIVATE.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    head, body = b64({"alg": "HS256", "kid": "k1"}), b64(claims())
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert reason(js, f"{head}.{body}.{jwt.utils.base64url_encode(mac).decode()}") == (
        "TOKEN_INVALID")
    assert reason(js, f"{b64({'alg': 'none', 'kid': 'k1'})}.{body}.") == "TOKEN_INVALID"
    assert reason(js, f"{b64({'alg': 'RS512', 'kid': 'k1'})}.{body}.x") == "TOKEN_INVALID"
    assert reason(js, sign(claims(), kid="other")) == "TOKEN_UNKNOWN_KEY"
    assert reason(js, "not.a.jwt") == "TOKEN_INVALID"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "k1"})
    assert reason(js, forged) == "TOKEN_INVALID"


def test_verified_tokens_are_cached_briefly(keys: MemoryKeys) -> None:
    js = service(keys, jwt_cache_ttl=0.2)
    token = sign(claims())
    js.verify(token)
    js.verify(token)
    assert keys.lookups == 1, "the second verify was a cache hit"
    time.sleep(0.25)
    js.verify(token)
    assert keys.lookups == 2, "entries live jwt_cache_ttl seconds"
    js0 = service(keys, jwt_cache_size=0)
    js0.verify(token)
    js0.verify(token)
    assert keys.lookups == 4, "size 0 turns the cache off"


def test_a_cached_token_still_expires(keys: MemoryKeys) -> None:
    js = service(keys, jwt_cache_ttl=60)
    now = int(time.time())
    token = sign(claims(iat=now - 10, exp=now + 1))
    js.verify(token)
    time.sleep(1.2)  # past exp: the cache entry is gone, leeway still accepts it
    js.verify(token)
    assert keys.lookups == 2


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc  ") == "abc"
    for value, why in ((None, "TOKEN_MISSING"), ("", "TOKEN_MISSING"),
                       ("Basic abc", "TOKEN_MALFORMED"), ("Bearer", "TOKEN_MALFORMED"),
                       ("abc", "TOKEN_MALFORMED")):
        with pytest.raises(Unauthenticated) as e:
            bearer_token(value)
        assert e.value.reason == why, value


def test_secrets_are_random_and_stored_as_sha256() -> None:
    a, b = secrets.new_client_secret(), secrets.new_client_secret()
    assert a != b and a.startswith("cs_") and len(a) >= 40
    assert secrets.new_session_token().startswith("st_")
    assert secrets.new_client_id().startswith("cid_")
    assert secrets.hash_secret(a) == hashlib.sha256(a.encode()).hexdigest()
    assert secrets.verify_secret(a, secrets.hash_secret(a))
    assert not secrets.verify_secret(b, secrets.hash_secret(a))
    assert not secrets.verify_secret(a, None) and not secrets.verify_secret(a, "")


def test_redaction_masks_every_credential_shape() -> None:
    token = sign(claims())
    secret, session = secrets.new_client_secret(), secrets.new_session_token()
    line = f"x {secret} y {session} z {token} w authorization: Bearer opaque-value"
    out = logs.redact(line)
    for s in (secret, session, token, "opaque-value"):
        assert s not in out
    assert out.startswith("x cs_[REDACTED] y st_[REDACTED] z [REDACTED-JWT]")
    assert logs.redact("cid_0123 and a uuid 6f1c2b0e-0000-4000-8000-000000000000") == (
        "cid_0123 and a uuid 6f1c2b0e-0000-4000-8000-000000000000"), "ids stay readable"


def test_formatters_redact_messages_and_tracebacks() -> None:
    secret = secrets.new_client_secret()
    try:
        raise ValueError(f"boom {secret}")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed %s", (secret,),
                                   exc_info=__import__("sys").exc_info())
    for formatter in (logs.TextFormatter("%(message)s"), logs.JsonFormatter()):
        out = formatter.format(record)
        assert secret not in out and "cs_[REDACTED]" in out
