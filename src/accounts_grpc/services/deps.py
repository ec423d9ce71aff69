"""What every use case may depend on; built once by the composition root (app.py)."""

from __future__ import annotations

from dataclasses import dataclass

from accounts_grpc.auth.authenticate import Authenticator
from accounts_grpc.auth.jwt_tokens import JwtService
from accounts_grpc.auth.keys import KeyStore
from accounts_grpc.config import Settings
from accounts_grpc.store.db import Database


@dataclass(frozen=True)
class Deps:
    settings: Settings
    db: Database
    keys: KeyStore
    jwts: JwtService
    authn: Authenticator
