"""Signing keys: asymmetric, with a ``kid``, shared by every server on the same database.

The private halves are stored encrypted (Fernet) with a key-encryption key (KEK) from
the configuration. SQLite: by default a file generated beside the database. PostgreSQL
(servers on several hosts share the database) has no default: ``--key-encryption-key``
or an explicitly named ``--key-encryption-key-file``, else the process exits saying so
(a key generated on one disk would not be the other servers'). Every server that shares
a database must share its KEK.

Phases. A key is *pending* from its creation until its ``activate_time``: it is in the
JWKS and verifies, but nobody signs with it. Then it is *active* (it signs) until its
``retire_time``, which is the next key's ``activate_time``; then *retired*: it verifies
and stays in the JWKS until its ``expire_time``, and is gone after that.

``keys rotate`` (``KeyStore.rotate``) inserts the new key pending, with ``activate_time
= now + publish lead``, and sets the current key's ``retire_time`` to that same instant,
in one transaction. The lead is the longest ``key_cache_seconds + jwks_max_age`` of the
servers (recorded on the keys, below; and the rotating process's own) plus
``PUBLISH_MARGIN_SECONDS``: by then every server has re-read the table (so its JWKS
lists the new key and it knows when to switch), and every JWKS cache that honours the
``Cache-Control: max-age`` has fetched it again. Each server switches at
``activate_time``, from the keys it has already read: no re-read at that instant, so
the servers switch within their clock skew of each other, and no verifier meets a kid
its JWKS lacks. With the defaults (60 s + 30 s + 10 s) a rotation completes within
100 seconds.

Lifetimes. Before a server first signs with a key it records its token lifetime and its
key cache + JWKS max-age on the key's row (``max_token_lifetime``,
``max_cache_seconds``: raised, never lowered; once per process and key, normally when
it first reads the pending key). A retired key expires at ``retire_time +
max_token_lifetime + max_cache_seconds + EXPIRY_MARGIN_SECONDS``, computed by whichever
comes later, the rotation or a server's record; so the old key outlives the last token
of the longest-lived server, whatever the rotating process's own settings.

Reading. Each process caches the keys it read and re-reads them when they are older
than ``key_cache_seconds`` (when it next signs or serves the JWKS). A token with a kid
it has not read makes it re-read the table: callers arriving while a re-read runs wait
for it and take its answer; a new re-read for an unknown kid starts at most once a
second (``MISS_RELOAD_INTERVAL``), so random kids cannot hammer the database.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from accounts_grpc.config import Settings
from accounts_grpc.store.audit import SIGNING_KEY_RETIRED, revocation
from accounts_grpc.store.db import Database, now_us
from accounts_grpc.store.errors import DatabaseError

log = logging.getLogger(__name__)

SUPPORTED_ALGS = ("RS256", "ES256")
#: seconds the publish lead adds to the servers' key cache + JWKS max-age: the time a
#: re-read takes, and clock skew between the servers (see module doc)
PUBLISH_MARGIN_SECONDS = 10
#: seconds a retired key outlives its last token beyond the servers' caches: the
#: verifiers' clock leeway (ours is 30 s) and clock skew (see module doc)
EXPIRY_MARGIN_SECONDS = 60
#: an unknown kid starts a re-read of the table at most this often (seconds)
MISS_RELOAD_INTERVAL = 1.0

PENDING, ACTIVE, RETIRED = "pending", "active", "retired"

NO_KEK = (
    "accounts-grpc: PostgreSQL needs an explicit key-encryption key, the same on every "
    "server: set --key-encryption-key (ACCOUNTS_KEY_ENCRYPTION_KEY) or "
    "--key-encryption-key-file (ACCOUNTS_KEY_ENCRYPTION_KEY_FILE); nothing was created "
    "(make one with: python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())')"
)


class KeyDecryptionError(RuntimeError):
    """The key-encryption key does not decrypt a key that signs, or will."""


def _fernet(key: bytes, where: str) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise SystemExit(
            f"accounts-grpc: the key-encryption key ({where}) is not 32 bytes of urlsafe base64"
        ) from None


def load_kek(settings: Settings, *, create: bool = True) -> Fernet:
    """The key-encryption key: from the setting, else from the file.

    SQLite: the file defaults to ``accounts.kek`` beside the database and is generated
    when missing. PostgreSQL: there is no default file; without the setting or an
    explicitly named file this exits with a one-line error and creates nothing. A file
    that is named explicitly but does not exist yet is generated (``create``), on
    PostgreSQL with a warning: every server on the database needs a copy of it.
    """
    if settings.key_encryption_key:
        return _fernet(settings.key_encryption_key.encode(), "ACCOUNTS_KEY_ENCRYPTION_KEY")
    if not settings.is_sqlite and not settings.key_encryption_key_file:
        raise SystemExit(NO_KEK)
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
    if settings.is_sqlite:
        log.info("created a new key-encryption key at %s", path)
    else:
        log.warning("created a new key-encryption key at %s: every server on this database "
                    "needs this same key (copy the file, or pass --key-encryption-key)", path)
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
    activate_time: int = 0
    max_token_lifetime: int = 0
    max_cache_seconds: int = 0

    def may_sign(self, now: int) -> bool:
        """Pending or active at ``now`` (microseconds)."""
        return self.retire_time is None or self.retire_time > now

    def phase(self, now: int) -> str:
        if self.activate_time > now:
            return PENDING
        return ACTIVE if self.may_sign(now) else RETIRED


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


def _rfc3339(us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us // 1_000_000))


class KeyStore:
    """Reads, creates and rotates signing keys; caches them per process (see module doc).

    ``refresh_seconds`` (default: the ``key_cache_seconds`` setting) is how long the keys
    read are reused."""

    def __init__(
        self, db: Database, kek: Fernet, settings: Settings,
        refresh_seconds: float | None = None,
    ) -> None:
        self._db = db
        self._kek = kek
        self._settings = settings
        self._refresh = settings.key_cache_seconds if refresh_seconds is None \
            else refresh_seconds
        #: what this process records as its key cache + JWKS max-age (whole seconds)
        self._cache_seconds = math.ceil(self._refresh + settings.jwks_max_age)
        self._lock = threading.Lock()  # held by every re-read and every write
        self._keys: dict[str, SigningKey] = {}
        self._private: dict[str, Any | None] = {}  # kid -> decrypted (None: failed)
        self._loaded_at = -math.inf  # monotonic, when the last re-read finished
        self._load_started = -math.inf  # monotonic, when it started
        self._miss_reload_at = -math.inf  # monotonic, the last re-read for an unknown kid
        self._signer = False  # this process signs: it records its lifetime on the keys
        self._recorded: dict[str, int] = {}  # kid -> the lifetime recorded on it
        self._signing_kid: str | None = None

    # -- reading ---------------------------------------------------------------------------
    def _load(self) -> None:
        """Re-read the table (the lock held)."""
        started = time.monotonic()
        now = now_us()
        with self._db.read() as uow:
            rows = uow.signing_keys.live(now=now)
        keys: dict[str, SigningKey] = {}
        private_keys: dict[str, Any | None] = {}
        for r in rows:
            old = self._keys.get(r.kid)
            public = old.public_key if old is not None else \
                jwt.get_algorithm_by_name(r.alg).from_jwk(json.dumps(r.public_jwk))
            private = None
            if r.retire_time is None or r.retire_time > now:  # may sign: decrypt it (once)
                if r.kid in self._private:
                    private = self._private[r.kid]
                else:
                    private = self._decrypt(r.kid, r.private_key_enc)
                private_keys[r.kid] = private
            key = SigningKey(r.kid, r.alg, dict(r.public_jwk), public, private, r.create_time,
                             r.retire_time, r.expire_time, r.activate_time,
                             r.max_token_lifetime, r.max_cache_seconds)
            if old is None and key.activate_time > now and self._signer:
                log.info("signing key %s is published; it signs from %s",
                         key.kid, _rfc3339(key.activate_time))
            keys[key.kid] = key
        self._keys = keys
        self._private = private_keys  # a retired key's private half is forgotten
        self._load_started = started
        self._loaded_at = time.monotonic()
        if self._signer:  # record this process's lifetime on what it may sign with
            # best effort: signing_key() records it before it signs
            self._record_locked([k for k in keys.values() if k.may_sign(now)],
                                best_effort=True)

    def _decrypt(self, kid: str, private_key_enc: str) -> Any | None:
        try:
            pem = self._kek.decrypt(private_key_enc.encode())
        except InvalidToken:
            log.error("the key-encryption key does not decrypt signing key %s: every "
                      "server on one database needs the same key-encryption key", kid)
            return None
        return serialization.load_pem_private_key(pem, password=None)

    def refresh(self) -> None:
        with self._lock:
            self._load()

    def _stale(self) -> bool:
        return not self._keys or time.monotonic() - self._loaded_at > self._refresh

    def _pick(self, now: int) -> SigningKey | None:
        """The key that signs at ``now``: the latest activated of those not retired; if
        none has activated yet (clock skew against the first key's maker), the first to."""
        best: SigningKey | None = None
        first: SigningKey | None = None
        for k in self._keys.values():
            if not k.may_sign(now):
                continue
            if k.activate_time <= now:
                if best is None or k.activate_time > best.activate_time:
                    best = k
            elif first is None or k.activate_time < first.activate_time:
                first = k
        return best or first

    def _reload_or_create_locked(self) -> None:
        """Re-read the keys; make one if none signs now (another server may have)."""
        self._load()
        if self._pick(now_us()) is None:
            self._create_locked(retire_others=False)
            self._load()

    def signing_key(self) -> SigningKey:
        """The key to sign with now (this process then counts as a signer, see module doc)."""
        self._signer = True
        key = None if self._stale() else self._pick(now_us())
        if key is None:
            with self._lock:
                if self._stale() or self._pick(now_us()) is None:
                    self._reload_or_create_locked()
            key = self._pick(now_us())
        assert key is not None
        if self._recorded.get(key.kid, -1) < self._settings.token_lifetime:
            with self._lock:  # normally done when the key was read, before it activated
                self._record_locked([key])
        if key.private_key is None:
            raise KeyDecryptionError(
                f"the key-encryption key does not decrypt the current signing key {key.kid}"
            )
        if key.kid != self._signing_kid:
            if self._signing_kid is not None:
                log.info("signing with key %s (was %s)", key.kid, self._signing_kid)
            self._signing_kid = key.kid
        return key

    def record_lifetime(self, key: SigningKey, lifetime: int) -> None:
        """Before signing a token that lives ``lifetime`` seconds (longer than the
        configured one) with ``key``: record that on the key."""
        if self._recorded.get(key.kid, -1) < lifetime:
            with self._lock:
                self._record_locked([key], lifetime)

    def _record_locked(self, keys: list[SigningKey], lifetime: int = 0, *,
                       best_effort: bool = False) -> None:
        """Record ``lifetime`` (at least the configured one) and this process's key cache
        + JWKS max-age on ``keys``: raised, never lowered, and a retired key's expiry
        with them. ``best_effort``: a database error is logged, and nothing counts as
        recorded."""
        lifetime = max(lifetime, self._settings.token_lifetime)
        todo = [k for k in keys if self._recorded.get(k.kid, -1) < lifetime]
        if not todo:
            return
        writes = [k.kid for k in todo if k.max_token_lifetime < lifetime
                  or k.max_cache_seconds < self._cache_seconds]
        if writes and not self._record_uses(writes, lifetime, best_effort=best_effort):
            return
        for k in todo:
            self._recorded[k.kid] = lifetime

    def _record_uses(self, kids: list[str], lifetime: int, *, best_effort: bool) -> bool:
        """``uow.signing_keys.record_uses`` in one write transaction; ``best_effort``: a
        database error is logged and returns False instead of raising."""
        try:
            with self._db.write() as uow:
                uow.signing_keys.record_uses(kids, lifetime=lifetime,
                                             cache_seconds=self._cache_seconds,
                                             margin_seconds=EXPIRY_MARGIN_SECONDS)
                uow.commit()
        except DatabaseError:
            if not best_effort:
                raise
            log.warning("could not record the token lifetime on the signing keys yet",
                        exc_info=True)
            return False
        return True

    def verification_key(self, kid: str) -> SigningKey | None:
        key = self._keys.get(kid)
        if key is None:
            key = self._reload_for(kid)
            if key is None:
                return None
        if key.expire_time is not None and key.expire_time <= now_us():
            return None
        return key

    def _reload_for(self, kid: str) -> SigningKey | None:
        """An unknown kid: maybe a key made elsewhere since the last re-read."""
        arrived = time.monotonic()
        with self._lock:  # a re-read in progress: wait for it, then decide
            key = self._keys.get(kid)
            if key is not None or self._load_started >= arrived:
                return key  # a re-read that began after this call arrived is the answer
            mono = time.monotonic()
            if mono - self._miss_reload_at < MISS_RELOAD_INTERVAL:
                return None
            self._miss_reload_at = mono
            self._load()
            return self._keys.get(kid)

    def jwks(self) -> list[dict[str, Any]]:
        """The public keys that verify (pending, active and retired ones until they
        expire), newest first (RFC 7517 members)."""
        if self._stale():
            with self._lock:
                if self._stale():
                    self._load()
        now = now_us()
        return [
            {k: v for k, v in key.public_jwk.items() if k != "key_ops"}
            for key in self._keys.values()
            if key.expire_time is None or key.expire_time > now
        ]

    def list_keys(self) -> list[SigningKey]:
        """Every key still in the JWKS, newest first, read now."""
        self.refresh()
        return list(self._keys.values())

    # -- writing ---------------------------------------------------------------------------
    def ensure_key(self, *, signer: bool = True) -> SigningKey:
        """At start-up: a usable signing key (made if there is none), or exit saying why.

        ``signer``: this process signs tokens (a server), so it records its token lifetime
        on the keys; ``keys list`` and ``keys rotate`` pass False. Every key that signs
        or will must decrypt with this process's key-encryption key."""
        try:
            key: SigningKey | None
            if signer:
                key = self.signing_key()
            else:
                with self._lock:
                    self._reload_or_create_locked()
                key = self._pick(now_us())
            assert key is not None
            now = now_us()
            for k in self._keys.values():
                if k.may_sign(now) and k.private_key is None:
                    raise KeyDecryptionError(
                        f"the key-encryption key does not decrypt the {k.phase(now)} "
                        f"signing key {k.kid}"
                    )
            return key
        except KeyDecryptionError as e:
            raise SystemExit(
                f"accounts-grpc: {e} (every server on one database needs the same "
                "key-encryption key: --key-encryption-key or --key-encryption-key-file)"
            ) from None

    def rotate(self, *, activate_in: float | None = None) -> SigningKey:
        """A new signing key, pending: every server signs with it from now + the publish
        lead (see module doc), and the current key retires at that instant and leaves the
        JWKS after the longest token lifetime recorded on it. ``activate_in`` (seconds)
        replaces the lead: for tests, or a deliberate switch that may make offline
        verifiers reject tokens for up to a JWKS max-age."""
        with self._lock:
            kid = self._create_locked(retire_others=True, activate_in=activate_in)
            assert kid is not None
            self._load()
        return self._keys[kid]

    def retire(self, kid: str) -> None:
        """Take a key out of service before its natural end (a leaked private key): it
        leaves the JWKS now, every server refuses its tokens once it re-reads the keys
        (within ``key_cache_seconds``), and a SIGNING_KEY_RETIRED event in the platform's
        audit stream tells verifiers that follow WatchEvents at once. A key pending after
        it signs from now. The one key that may sign cannot go: ``keys rotate`` first.
        Raises LookupError (no such live key) or ValueError (it is the only signer)."""
        with self._lock, self._db.write() as uow:
            now = now_us()
            live = uow.signing_keys.lock_live(now=now)
            if kid not in {r.kid for r in live}:
                raise LookupError(f"no signing key {kid!r} in the JWKS")
            if not any(r.kid != kid and (r.retire_time is None or r.retire_time > now)
                       for r in live):
                raise ValueError(f"{kid} is the only key that signs: run `keys rotate` first")
            uow.signing_keys.retire_now(kid, now=now)
            uow.audit.record(
                account_id="", actor_user_id=None, action="signing_key.retire",
                resource_type="SigningKey", resource_id=kid, changed_fields=["expire_time"],
                revocation=revocation(SIGNING_KEY_RETIRED, key_ids=[kid]))
            uow.commit()
            self._load()
        log.info("retired signing key %s: it has left the JWKS", kid)

    def _create_locked(self, *, retire_others: bool,
                       activate_in: float | None = None) -> str | None:
        alg = self._settings.signing_alg
        private = _generate(alg)
        kid = _new_kid()
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with self._db.write() as uow:
            now = now_us()
            # serializes key creation across servers on one database
            live = uow.signing_keys.lock_live(now=now)
            current = [r for r in live if r.retire_time is None]
            activate = now
            if not retire_others:
                if current:
                    return None  # another server created one meanwhile
            elif current:
                for r in current:  # never schedule a key the servers could not decrypt
                    try:
                        self._kek.decrypt(r.private_key_enc.encode())
                    except InvalidToken:
                        raise KeyDecryptionError(
                            f"the key-encryption key does not decrypt the current signing "
                            f"key {r.kid}: a key made with it would not sign anywhere"
                        ) from None
                if activate_in is None:
                    cache = max([self._cache_seconds] + [
                        r.max_cache_seconds for r in live
                        if r.retire_time is None or r.retire_time > now
                    ])
                    activate = now + (cache + PUBLISH_MARGIN_SECONDS) * 1_000_000
                else:
                    activate = now + int(activate_in * 1_000_000)
                # after any key still pending from an earlier rotation
                activate = max([activate] + [r.activate_time + 1 for r in live])
                uow.signing_keys.retire_current(at=activate,
                                                margin_seconds=EXPIRY_MARGIN_SECONDS)
            uow.signing_keys.insert(dict(
                kid=kid,
                alg=alg,
                public_jwk=_public_jwk(kid, alg, private),
                private_key_enc=self._kek.encrypt(pem).decode(),
                create_time=now,
                activate_time=activate,
                retire_time=None,
                expire_time=None,
                max_token_lifetime=0,  # raised by each server before it signs with it
                max_cache_seconds=0,
            ))
            uow.commit()
        if activate > now:
            log.info("created signing key %s (%s), pending: it signs from %s", kid, alg,
                     _rfc3339(activate))
        else:
            log.info("created signing key %s (%s)", kid, alg)
        return kid
