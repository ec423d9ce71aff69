"""Signing keys on SQLite and PostgreSQL: shared by every server on one database,
encrypted at rest with the key-encryption key, rotated without breaking tokens."""

from __future__ import annotations

import stat
import threading
import time
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from accounts_grpc.auth.jwt_tokens import JwtService
from accounts_grpc.auth.keys import KeyStore, load_kek
from accounts_grpc.config import Settings
from accounts_grpc.domain.errors import Unauthenticated
from accounts_grpc.store.db import Database
from accounts_grpc.store.tables import signing_keys


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=db_url, key_encryption_key_file=str(tmp_path / "kek"),
                    token_lifetime=600)


def store(db: Database, settings: Settings, refresh: float = 60.0) -> KeyStore:
    return KeyStore(db, load_kek(settings), settings, refresh_seconds=refresh)


def rows(db: Database) -> list[sa.Row]:
    with db.read() as uow:
        return list(uow.conn.execute(sa.select(signing_keys).order_by(signing_keys.c.create_time)))


def test_the_kek_file_is_made_once_and_private(settings: Settings) -> None:
    k1 = load_kek(settings)
    path = settings.kek_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = k1.encrypt(b"x")
    assert load_kek(settings).decrypt(token) == b"x", "read back, not made again"
    with pytest.raises(SystemExit, match="not 32 bytes"):
        load_kek(settings.replace(key_encryption_key="short"))
    with pytest.raises(SystemExit, match="no key-encryption key"):
        load_kek(settings.replace(key_encryption_key_file=str(path) + ".missing"), create=False)


def test_private_keys_are_stored_encrypted(db: Database, settings: Settings) -> None:
    key = store(db, settings).ensure_key()
    [row] = rows(db)
    assert row.kid == key.kid and row.retire_time is None
    assert "PRIVATE KEY" not in row.private_key_enc
    pem = load_kek(settings).decrypt(row.private_key_enc.encode())
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert set(row.public_jwk) >= {"kty", "kid", "use", "alg"}
    assert set(row.public_jwk) >= ({"n", "e"} if row.alg == "RS256" else {"crv", "x", "y"})
    assert "d" not in row.public_jwk and "key_ops" not in row.public_jwk


def test_servers_on_one_database_share_the_keys(db: Database, settings: Settings) -> None:
    a, b = store(db, settings), store(db, settings)
    assert a.ensure_key().kid == b.ensure_key().kid
    token = JwtService(a, settings).issue(user_id="u", account_id="acc", roles=[],
                                          kind="MACHINE").token
    assert JwtService(b, settings).verify(token)["sub"] == "u"


def test_a_server_with_another_kek_refuses_to_start(db: Database, settings: Settings,
                                                    tmp_path: Path) -> None:
    store(db, settings).ensure_key()
    other = settings.replace(key_encryption_key=Fernet.generate_key().decode())
    with pytest.raises(SystemExit, match="same key-encryption key"):
        store(db, other).ensure_key()


def test_first_key_is_made_once_under_concurrency(db: Database, settings: Settings) -> None:
    stores = [store(db, settings) for _ in range(4)]
    kids: list[str] = []
    threads = [threading.Thread(target=lambda s=s: kids.append(s.ensure_key().kid))
               for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(set(kids)) == 1 and len(rows(db)) == 1


def test_rotation(db: Database, settings: Settings) -> None:
    a = store(db, settings)
    b = store(db, settings, refresh=0.0)  # another server, re-reading the current key at once
    old = a.ensure_key()
    assert b.ensure_key().kid == old.kid
    old_token = JwtService(a, settings).issue(user_id="u", account_id="acc", roles=[],
                                              kind="MACHINE").token
    new = a.rotate(activate_in=0)  # at once; the phases: tests/e2e/test_key_rotation.py
    assert new.kid != old.kid and new.private_key is not None

    retired = {r.kid: r for r in rows(db)}[old.kid]
    lifetime_us = settings.token_lifetime * 1_000_000
    assert retired.retire_time is not None
    assert retired.expire_time >= retired.retire_time + lifetime_us, "outlives its tokens"
    assert [k["kid"] for k in a.jwks()] == [new.kid, old.kid]
    [old_again] = [k for k in a.list_keys() if k.kid == old.kid]
    assert old_again.private_key is None, "a retired key is never decrypted again"

    # the other server signs with the new key, and verifies both
    js_b = JwtService(b, settings)
    new_token = js_b.issue(user_id="u", account_id="acc", roles=[], kind="MACHINE").token
    assert jwt.get_unverified_header(new_token)["kid"] == new.kid
    assert js_b.verify(old_token)["sub"] == "u"

    assert JwtService(a, settings).verify(new_token)["sub"] == "u"

    # once expired, the old key leaves the JWKS and its tokens stop verifying
    with db.write() as uow:
        uow.conn.execute(signing_keys.update().where(signing_keys.c.kid == old.kid)
                         .values(expire_time=1))
        uow.commit()
    fresh = store(db, settings)
    assert [k["kid"] for k in fresh.jwks()] == [new.kid]
    with pytest.raises(Unauthenticated) as e:
        JwtService(fresh, settings).verify(old_token)
    assert e.value.reason == "TOKEN_UNKNOWN_KEY"


def test_a_key_rotated_elsewhere_verifies_immediately(db: Database, settings: Settings) -> None:
    here, elsewhere = store(db, settings), store(db, settings)
    here.ensure_key()
    time.sleep(1.05)  # unknown-kid reloads are rate limited to one a second
    rotated = elsewhere.rotate(activate_in=0)
    token = JwtService(elsewhere, settings).issue(user_id="u", account_id="acc", roles=[],
                                                  kind="MACHINE").token
    assert jwt.get_unverified_header(token)["kid"] == rotated.kid
    assert JwtService(here, settings).verify(token)["sub"] == "u", "reloaded on the miss"


def test_es256_keys(db: Database, settings: Settings) -> None:
    es = settings.replace(signing_alg="ES256")
    key = store(db, es).ensure_key()
    assert key.alg == "ES256"
    [jwk] = store(db, es).jwks()
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
    token = JwtService(store(db, es), es).issue(user_id="u", account_id="a", roles=[],
                                                kind="MACHINE").token
    assert jwt.decode(token, jwt.PyJWK.from_dict(jwk).key, algorithms=["ES256"],
                      audience=es.audience)["sub"] == "u"
