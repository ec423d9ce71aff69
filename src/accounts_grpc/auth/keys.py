"""Signing keys: asymmetric, with a ``kid``, shared by every server on the same database.

The private halves are stored encrypted (Fernet) with a key-encryption key (KEK) from
the configuration; by default a generated file beside the SQLite database. Every
server that shares a database must share its KEK.

Each process caches the keys it has read. The *signing* key is re-read at most every
``refresh_seconds`` (so after ``keys rotate`` another server may sign with the previous
key for that long, which is harmless: the previous key stays in the JWKS and verifies
until its last token expires). A token with a kid this process has not seen makes it
re-read the table at once (at most once a second), so a key rotated elsewhere verifies
immediately.

A retired key stays in the JWKS (and verifies) for one token lifetime plus a margin
that covers that refresh lag, the verifier's clock leeway and some clock skew.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from accounts_grpc.config import Settings
from accounts_grpc.store.db import Database, now_us
from accounts_grpc.store.tables import signing_keys

log = logging.getLogger(__name__)

SUPPORTED_ALGS = ("RS256", "ES256")
#: seconds a retired key outlives the last token it may have signed (see module doc)
EXPIRY_MARGIN_SECONDS = 90


class KeyDecryptionError(RuntimeError):
    """The key-encryption key does not decrypt the current signing key."""


def _fernet(key: bytes, where: str) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise SystemExit(
            f"accounts-grpc: the key-encryption key ({where}) is not 32 bytes of urlsafe base64"
        ) from None


def load_kek(settings: Settings, *, create: bool = True) -> Fernet:
    """The key-encryption key: from the setting, else the file (created when missing)."""
    if settings.key_encryption_key:
        return _fernet(settings.key_encryption_key.encode(), "ACCOUNTS_KEY_ENCRYPTION_KEY")
    path = settings.kek_path()
    if path.exists():
        return _fernet(path.read_bytes().strip(), str(path))
    if not create:
        raise SystemExit(f"accounts-grpc: no key-encryption key at {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    log.info("created a new key-encryption key at %s", path)
    return Fernet(key)


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    public_jwk: dict[str, Any]
    public_key: Any  # cryptography public key object, loaded once
    private_key: Any | None  # only for keys that may still sign
    create_time: int
    retire_time: int | None
    expire_time: int | None


def _generate(alg: str) -> Any:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported signing algorithm {alg!r}; use one of {SUPPORTED_ALGS}")


def _public_jwk(kid: str, alg: str, private_key: Any) -> dict[str, Any]:
    algo = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algo.to_jwk(private_key.public_key()))
    jwk.pop("key_ops", None)  # RFC 7517 §4.3: not together with "use"
    jwk.update({"kid": kid, "use": "sig", "alg": alg})
    return jwk


def _new_kid() -> str:
    day = time.strftime("%Y%m%d", time.gmtime())
    return day + "-" + base64.urlsafe_b64encode(os.urandom(6)).decode()


class KeyStore:
    """Reads, creates and rotates signing keys; caches them per process (see module doc)."""

    def __init__(
        self, db: Database, kek: Fernet, settings: Settings, refresh_seconds: float = 60.0
    ) -> None:
        self._db = db
        self._kek = kek
        self._settings = settings
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        self._current: SigningKey | None = None
        self._loaded_at = 0.0
        self._last_miss_reload = 0.0

    # -- reading ---------------------------------------------------------------------------
    def _load(self) -> None:
        now = now_us()
        with self._db.connect() as conn:
            rows = conn.execute(
                sa.select(signing_keys).where(
                    sa.or_(signing_keys.c.expire_time.is_(None), signing_keys.c.expire_time > now)
                ).order_by(signing_keys.c.create_time.desc(), signing_keys.c.kid)
            ).all()
        keys: dict[str, SigningKey] = {}
        current: SigningKey | None = None
        for r in rows:
            old = self._keys.get(r.kid)
            if old is not None and old.retire_time == r.retire_time:
                key = old
            else:
                private = None
                if r.retire_time is None:
                    try:
                        pem = self._kek.decrypt(r.private_key_enc.encode())
                        private = serialization.load_pem_private_key(pem, password=None)
                    except InvalidToken:
                        log.error(
                            "the key-encryption key does not decrypt signing key %s: every "
                            "server on one database needs the same key-encryption key", r.kid
                        )
                public = jwt.get_algorithm_by_name(r.alg).from_jwk(json.dumps(r.public_jwk))
                key = SigningKey(r.kid, r.alg, dict(r.public_jwk), public, private,
                                 r.create_time, r.retire_time, r.expire_time)
            keys[key.kid] = key
            if current is None and key.retire_time is None:
                current = key
        self._keys = keys
        self._current = current
        self._loaded_at = time.monotonic()

    def refresh(self) -> None:
        with self._lock:
            self._load()

    def _stale(self) -> bool:
        return self._current is None or time.monotonic() - self._loaded_at > self._refresh

    def signing_key(self) -> SigningKey:
        if self._stale():
            with self._lock:
                if self._stale():  # another thread may have reloaded meanwhile
                    self._load()
                    if self._current is None:
                        self._create_locked(retire_others=False)
                        self._load()
        current = self._current
        assert current is not None
        if current.private_key is None:
            raise KeyDecryptionError(
                f"the key-encryption key does not decrypt the current signing key {current.kid}"
            )
        return current

    def verification_key(self, kid: str) -> SigningKey | None:
        key = self._keys.get(kid)
        if key is not None:
            if key.expire_time is not None and key.expire_time <= now_us():
                return None
            return key
        mono = time.monotonic()
        if mono - self._last_miss_reload >= 1.0:  # an unknown kid: maybe rotated elsewhere
            with self._lock:
                self._last_miss_reload = mono
                self._load()
            return self._keys.get(kid)
        return None

    def jwks(self) -> list[dict[str, Any]]:
        """The public keys still valid for verification, newest first (RFC 7517 members)."""
        if time.monotonic() - self._loaded_at > self._refresh or not self._keys:
            self.refresh()
        now = now_us()
        return [
            {k: v for k, v in key.public_jwk.items() if k != "key_ops"}
            for key in self._keys.values()
            if key.expire_time is None or key.expire_time > now
        ]

    def list_keys(self) -> list[SigningKey]:
        self.refresh()
        return list(self._keys.values())

    # -- writing ---------------------------------------------------------------------------
    def ensure_key(self) -> SigningKey:
        """At start-up: a usable signing key (made if there is none), or exit saying why."""
        try:
            return self.signing_key()
        except KeyDecryptionError as e:
            raise SystemExit(
                f"accounts-grpc: {e} (every server on one database needs the same "
                "key-encryption key: --key-encryption-key or --key-encryption-key-file)"
            ) from None

    def rotate(self) -> SigningKey:
        """A new current key; the previous ones stop signing and expire after one token lifetime."""
        with self._lock:
            self._create_locked(retire_others=True)
            self._load()
        assert self._current is not None
        return self._current

    def _create_locked(self, *, retire_others: bool) -> None:
        alg = self._settings.signing_alg
        private = _generate(alg)
        kid = _new_kid()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        now = now_us()
        # the retired keys verify until their last token has expired (see module doc)
        lifetime_us = int(
            (self._settings.token_lifetime + self._refresh + EXPIRY_MARGIN_SECONDS) * 1_000_000
        )
        with self._db.write() as uow:
            if uow.conn.dialect.name == "postgresql":
                # serialize key creation across servers on one database
                uow.conn.exec_driver_sql("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
            live = uow.conn.execute(
                sa.select(signing_keys.c.kid).where(signing_keys.c.retire_time.is_(None))
            ).all()
            if live and not retire_others:
                return  # another server created one meanwhile
            if live:
                uow.conn.execute(
                    signing_keys.update()
                    .where(signing_keys.c.retire_time.is_(None))
                    .values(retire_time=now, expire_time=now + lifetime_us)
                )
            uow.conn.execute(
                signing_keys.insert().values(
                    kid=kid,
                    alg=alg,
                    public_jwk=_public_jwk(kid, alg, private),
                    private_key_enc=self._kek.encrypt(pem).decode(),
                    create_time=now,
                    retire_time=None,
                    expire_time=None,
                )
            )
            uow.commit()
        log.info("created signing key %s (%s)", kid, alg)


def kek_file_hint(path: Path) -> str:
    return f"key-encryption key file: {path}"
