"""Shared fixtures. See tests/support.py for the real-server and real-database helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Server, backends, database_url, running_server

# Servers the tests start as processes drain at once, unless a test says otherwise (the
# drain delay has its own test, tests/e2e/test_drain.py).
os.environ.setdefault("ACCOUNTS_DRAIN_DELAY", "0")


@pytest.fixture(params=backends(), scope="module")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One running server per test module and database backend, with a bootstrapped admin."""
    with running_server(backend, tmp_path_factory.mktemp(f"srv-{backend}")) as srv:
        yield srv


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh empty database (not migrated) for store tests."""
    with database_url(backend, tmp_path) as url:
        yield url
