"""The use cases in process, composed as app.py composes them, on a real database: one
per test module and backend (SQLite, and PostgreSQL when ACCOUNTS_TEST_POSTGRES_URL is
set), migrated once. No server, no channel: the rules are asked directly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accounts_grpc.app import ensure_signing_key, load_key_encryption_key, open_database
from accounts_grpc.auth.authenticate import Authenticator
from accounts_grpc.auth.jwt_tokens import JwtService
from accounts_grpc.auth.keys import KeyStore
from accounts_grpc.services import Services
from accounts_grpc.services.deps import Deps
from tests.support import database_url, test_settings
from tests.usecases.helpers import UseCases


@pytest.fixture(scope="module")
def services(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """``Services`` over a fresh database migrated to head, built like ``App.__init__``."""
    tmp = tmp_path_factory.mktemp(f"usecases-{backend}")
    with database_url(backend, tmp) as url:
        settings = test_settings(url, tmp)
        db = open_database(settings, auto_migrate=True)
        try:
            keys = KeyStore(db, load_key_encryption_key(settings), settings)
            ensure_signing_key(keys, settings)
            jwts = JwtService(keys, settings)
            authn = Authenticator(db, jwts, settings)
            yield Services.build(Deps(settings, db, keys, jwts, authn,
                                      page_secret=Deps.derive_secret(settings, "page-tokens")))
        finally:
            db.dispose()


@pytest.fixture(scope="module")
def uc(services: Services) -> Iterator[UseCases]:
    """The use cases, the bootstrapped admin's Principal, and a reader of every table."""
    with UseCases.over(services) as u:
        yield u
