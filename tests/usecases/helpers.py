"""Helpers for the use-case tests (no tests here).

The tests call the use cases exactly as the servicers do: the request is a proto message,
converted by ``rpc.convert`` as the servicer converts it, and the caller is a Principal
made by the real authenticator from a real token. A refused call must raise the domain
error the interceptor would send (its class is the gRPC code, its ``reason`` the ErrorInfo
reason, its violations the BadRequest) and change no row of any table: every table is
read before and after through an engine of its own, not through the store.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from accounts.v1 import account_pb2, partition_pb2, user_group_pb2, user_pb2

from accounts_grpc.domain.errors import DomainError, InvalidArgument
from accounts_grpc.domain.principal import Principal
from accounts_grpc.rpc.convert import accounts as cva
from accounts_grpc.rpc.convert import groups as cvg
from accounts_grpc.rpc.convert import partitions as cvp
from accounts_grpc.rpc.convert import users as cvu
from accounts_grpc.services import Services
from accounts_grpc.services.bootstrap import bootstrap

HUMAN, EXTERNAL, MACHINE = (
    user_pb2.USER_KIND_HUMAN,
    user_pb2.USER_KIND_EXTERNAL,
    user_pb2.USER_KIND_MACHINE,
)
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def uniq(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def device_id() -> str:
    """A fresh device id: exactly 8 characters."""
    return uuid.uuid4().hex[:8].upper()


@dataclass
class UseCases:
    """The use cases of one database, its bootstrapped ``admin``, and what tests need
    around them: principals, the "nothing changed" snapshot and fixtures made through
    the use cases themselves."""

    services: Services
    admin: Principal
    engine: sa.Engine
    tables: list[sa.Table]

    @classmethod
    @contextlib.contextmanager
    def over(cls, services: Services) -> Iterator[UseCases]:
        boot = bootstrap(services.deps.db)
        engine = sa.create_engine(services.deps.settings.database_url, poolclass=sa.NullPool)
        meta = sa.MetaData()
        meta.reflect(engine)
        try:
            admin = cls.token_principal(services, boot.user_id, boot.account_id, "MACHINE")
            yield cls(services, admin, engine, list(meta.sorted_tables))
        finally:
            engine.dispose()

    @staticmethod
    def token_principal(services: Services, user_id: str, account_id: str,
                        kind: str) -> Principal:
        """The Principal authentication makes of a fresh JWT of this user (its roles,
        groups and partitions as the database holds them now)."""
        deps = services.deps
        token = deps.jwts.issue(user_id=user_id, account_id=account_id, roles=[], kind=kind)
        return deps.authn.principal_for_token(token.token, touch=False)

    def principal(self, user: Any) -> Principal:
        """The Principal of a user row (anything with ``id``, ``account_id``, ``kind``)."""
        return self.token_principal(self.services, user.id, user.account_id, user.kind)

    # -- nothing changed -----------------------------------------------------------------

    def snapshot(self) -> dict[str, list[str]]:
        """Every row of every table, to compare before and after a refused call."""
        with self.engine.connect() as conn:
            return {t.name: sorted(repr(tuple(r)) for r in conn.execute(sa.select(t)))
                    for t in self.tables}

    def rejects(
        self,
        call: Callable[[], object],
        error: type[DomainError],
        reason: str,
        *,
        field: str | None = None,
        fields: Sequence[str] | None = None,
        meta: dict[str, str] | None = None,
    ) -> DomainError:
        """``call`` raises exactly ``error`` with ``reason``, and the database is as it was.

        ``field``: some violation is of that field (or inside it, as ``field.x`` or
        ``field[i]``); ``fields``: the violations are exactly these, each with a reason;
        ``meta``: these ErrorInfo metadata entries. An InvalidArgument always names a field.
        """
        before = self.snapshot()
        with pytest.raises(error) as info:
            call()
        e = info.value
        assert type(e) is error, f"expected {error.__name__}, got {type(e).__name__}: {e}"
        assert e.reason == reason, f"expected reason {reason}, got {e.reason}: {e.message}"
        violations = list(e.violations) if isinstance(e, InvalidArgument) else []
        named = [v.field for v in violations]
        if fields is not None:
            assert named == list(fields), named
            assert all(v.description for v in violations), violations
        if field is not None:
            assert any(x == field or x.startswith((field + ".", field + "[")) for x in named), (
                f"expected a violation of {field}, got {named}")
        if isinstance(e, InvalidArgument):
            assert named, "INVALID_ARGUMENT without field violations"
        for k, v in (meta or {}).items():
            assert e.metadata.get(k) == v, (k, e.metadata)
        assert e.message and "Traceback" not in e.message
        assert self.snapshot() == before, "a refused call changed the database"
        return e

    # -- fixtures, made through the use cases (as admin unless ``p`` says who) ----------

    def new_account(self, name: str = "Acme", *, roles: Sequence[str] = (),
                    consultancy_account_id: str = "") -> tuple[Any, Any]:
        """A new account and its first user, an account-admin: (account row, user row)."""
        account = account_pb2.Account(
            name=f"{name} {uniq()}", email=f"{uniq('acct-')}@example.com", roles=list(roles),
            consultancy_account_id=consultancy_account_id,
        )
        first = user_pb2.User(kind=HUMAN, email=f"{uniq('owner-')}@example.com",
                              first_name="Owner")
        row, user = self.services.accounts.create_account(
            self.admin, cva.account_input(account), cva.first_user_input(first), "")
        return row, user

    def close_account(self, account_id: str) -> None:
        self.services.accounts.close_account(self.admin, account_id)

    def new_user(self, account_id: str, kind: user_pb2.UserKind = HUMAN, *,
                 p: Principal | None = None, roles: Sequence[str] = (), **fields: Any) -> Any:
        """CreateUser with defaults that make a valid user of ``kind``; the CreatedUser."""
        user = user_pb2.User(kind=kind, roles=list(roles), **fields)
        if kind == HUMAN and not user.email:
            user.email = f"{uniq('u-')}@example.com"
        if kind == EXTERNAL and not user.external_id:
            user.external_id = uniq("ext-")
        return self.services.users.create_user(p or self.admin, account_id,
                                               cvu.user_input(user))

    def new_partition(self, account_id: str, name: str = "") -> Any:
        part = partition_pb2.Partition(name=name or uniq("part-"))
        return self.services.partitions.create(self.admin, account_id,
                                               cvp.partition_input(part))

    def register(self, partition_id: str, *devices: dict[str, Any]) -> list[Any]:
        """RegisterDevices of ``devices`` (Device fields) into the partition."""
        msgs = [partition_pb2.Device(**d) for d in devices]
        return list(self.services.devices.register_devices(
            self.admin, partition_id, [cvp.device_input(m) for m in msgs]))

    def new_group(self, account_id: str, name: str = "", *, roles: Sequence[str] = (),
                  partition_ids: Sequence[str] = (), members: Sequence[str] = ()) -> Any:
        """A user group (and its members); its GroupView."""
        group = user_group_pb2.UserGroup(name=name or uniq("g-"), roles=list(roles),
                                         partition_ids=list(partition_ids))
        view = self.services.groups.create(self.admin, account_id, cvg.group_input(group))
        if members:
            view = self.services.memberships.add_members(self.admin, view.row.id, list(members))
        return view
