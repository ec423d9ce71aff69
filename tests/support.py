"""Test support: real databases, a real server on free ports, real channels.

Database tests run on SQLite always and on PostgreSQL too when
ACCOUNTS_TEST_POSTGRES_URL is set; every PostgreSQL use gets its own schema, so
runs (and xdist workers) never collide.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy as sa
from accounts.v1 import (
    account_service_pb2_grpc,
    partition_service_pb2_grpc,
    session_service_pb2_grpc,
    user_group_service_pb2_grpc,
    user_service_pb2_grpc,
)
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from accounts_grpc.config import Settings

PG_ENV = "ACCOUNTS_TEST_POSTGRES_URL"


def backends() -> list[str]:
    return ["sqlite", "postgres"] if os.environ.get(PG_ENV) else ["sqlite"]


@contextlib.contextmanager
def database_url(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL schema dropped after."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'accounts.db'}"
        return
    base = os.environ[PG_ENV]
    from accounts_grpc.store.db import normalize_url

    base = normalize_url(base)
    schema = f"t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def test_settings(db_url: str, tmp: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        database_url=db_url,
        bind_host="127.0.0.1",
        grpc_port=0,
        http_port=0,
        key_encryption_key_file=str(tmp / "test.kek"),
        shutdown_grace=3.0,
        drain_delay=0.0,  # tests that drain say so
        grpc_workers=48,
        log_level="WARNING",
    )
    base.update(overrides)
    return Settings(**base)


@dataclass
class Stubs:
    accounts: account_service_pb2_grpc.AccountServiceStub
    users: user_service_pb2_grpc.UserServiceStub
    groups: user_group_service_pb2_grpc.UserGroupServiceStub
    partitions: partition_service_pb2_grpc.PartitionServiceStub
    sessions: session_service_pb2_grpc.SessionServiceStub

    @classmethod
    def on(cls, channel: grpc.Channel) -> Stubs:
        return cls(
            account_service_pb2_grpc.AccountServiceStub(channel),
            user_service_pb2_grpc.UserServiceStub(channel),
            user_group_service_pb2_grpc.UserGroupServiceStub(channel),
            partition_service_pb2_grpc.PartitionServiceStub(channel),
            session_service_pb2_grpc.SessionServiceStub(channel),
        )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Server:
    """A running App on free ports plus a channel to it."""

    app: Any
    channel: grpc.Channel
    stubs: Stubs
    tmp: Path
    db_url: str
    backend: str
    admin_client_id: str = ""
    admin_client_secret: str = ""
    admin_token: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.app.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.app.http_port}"

    @property
    def admin(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.admin_token)


@contextlib.contextmanager
def running_server(backend: str, tmp: Path, **overrides: Any) -> Iterator[Server]:
    from accounts.v1 import session_service_pb2

    from accounts_grpc.app import App
    from accounts_grpc.services.bootstrap import bootstrap

    extra_handlers = overrides.pop("extra_handlers", ())
    with database_url(backend, tmp) as url:
        app = App(test_settings(url, tmp, **overrides), auto_migrate=True,
                  extra_handlers=extra_handlers)
        app.start()
        channel = grpc.insecure_channel(f"127.0.0.1:{app.grpc_port}")
        try:
            srv = Server(app, channel, Stubs.on(channel), tmp, url, backend)
            boot = bootstrap(app.db)
            srv.admin_client_id, srv.admin_client_secret = boot.client_id, boot.client_secret
            resp = srv.stubs.sessions.CreateToken(
                session_service_pb2.CreateTokenRequest(
                    client_id=boot.client_id, client_secret=boot.client_secret
                )
            )
            srv.admin_token = resp.access_token
            yield srv
        finally:
            channel.close()
            app.stop(grace=1.0)


@dataclass
class Failure:
    code: grpc.StatusCode
    message: str
    reason: str
    domain: str
    metadata: dict[str, str]
    violations: list[tuple[str, str]]
    retry_seconds: int | None


def failure(err: grpc.RpcError) -> Failure:
    """Unpack a failed call: code, message, ErrorInfo, BadRequest, RetryInfo."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    reason, domain, meta = "", "", {}
    violations: list[tuple[str, str]] = []
    retry = None
    if status is not None:
        for d in status.details:
            if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                d.Unpack(info)
                reason, domain, meta = info.reason, info.domain, dict(info.metadata)
            elif d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                br = error_details_pb2.BadRequest()
                d.Unpack(br)
                violations = [(v.field, v.description) for v in br.field_violations]
            elif d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                ri = error_details_pb2.RetryInfo()
                d.Unpack(ri)
                retry = ri.retry_delay.seconds
    return Failure(err.code(), err.details() or "", reason, domain, meta, violations, retry)


def expect_error(fn: Any, *args: Any, code: grpc.StatusCode, reason: str | None = None,
                 field: str | None = None, **kwargs: Any) -> Failure:
    """Call ``fn``; assert it fails with ``code`` (and the ErrorInfo reason / a violated field)."""
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as e:
        f = failure(e)
        assert f.code == code, f"expected {code}, got {f.code}: {f.message} ({f.reason})"
        assert f.domain == "accounts.v1", f"no ErrorInfo in {f}"
        if reason is not None:
            assert f.reason == reason, f"expected reason {reason}, got {f.reason}: {f.message}"
        if field is not None:
            fields = [v[0] for v in f.violations]
            assert any(x == field or x.startswith(field + ".") or x.startswith(field + "[")
                       for x in fields), f"expected a violation of {field}, got {fields}"
        return f
    raise AssertionError(f"expected {code}, but the call succeeded")


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text exposition (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name + " ") and not labels:
            return float(line.rsplit(" ", 1)[1])
        if not line.startswith(name + "{"):
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):line.rindex("}") + 1]))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def exposition_problems(text: str) -> list[str]:
    """What a scraper would get twice or for nothing in a /metrics text, parsed as
    prometheus_client's own parser reads it: a series (name and labels) given twice, and
    ``_created`` series (which double the output)."""
    from prometheus_client.parser import text_string_to_metric_families

    seen: set[tuple[str, frozenset[tuple[str, str]]]] = set()
    problems = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            if key in seen:
                problems.append(f"twice: {s.name} {s.labels}")
            seen.add(key)
            if s.name.endswith("_created"):
                problems.append(f"a _created series: {s.name} {s.labels}")
    return problems
