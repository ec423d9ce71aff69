"""What every use case may depend on; built once by the composition root (app.py)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from accounts_grpc.auth.authenticate import Authenticator
from accounts_grpc.auth.jwt_tokens import JwtService
from accounts_grpc.auth.keys import KeyStore
from accounts_grpc.config import Settings
from accounts_grpc.domain.ports import Database


@dataclass(frozen=True)
class Deps:
    settings: Settings
    #: where units of work come from (store/db.py's ``Database``; tests/fakes.py's)
    db: Database
    keys: KeyStore
    jwts: JwtService
    authn: Authenticator
    #: HMAC key of list page tokens; the same on every server that shares the KEK
    page_secret: bytes = field(default=b"", repr=False)

    @staticmethod
    def derive_secret(settings: Settings, purpose: str) -> bytes:
        """A purpose-bound secret from the key-encryption key (shared by all servers)."""
        kek = settings.key_encryption_key.encode() or settings.kek_path().read_bytes().strip()
        return hmac.new(kek, f"accounts-grpc/{purpose}".encode(), hashlib.sha256).digest()
