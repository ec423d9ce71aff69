"""The store tests' database: a fresh one (tests/conftest.py ``db_url``), migrated."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accounts_grpc.store import migrate
from accounts_grpc.store.db import Database


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    d = Database(db_url)
    migrate.upgrade(d.engine)
    yield d
    d.dispose()
