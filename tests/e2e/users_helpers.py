"""Helpers for the UserService, permission, order and intermediary tests (no tests here).

Every fixture is built through the public API (AccountService, UserService,
PartitionService, SessionService); the database is only *read*, to prove that a
failed call changed nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from accounts.v1 import (
    account_pb2,
    account_service_pb2,
    audit_event_pb2,
    partition_pb2,
    partition_service_pb2,
    session_service_pb2,
    user_pb2,
    user_service_pb2,
)

from accounts_grpc.store.tables import (
    audit_events as audit_table,
)
from accounts_grpc.store.tables import (
    device_permissions,
    group_members,
    orders,
    sessions,
    users,
)
from tests.support import Server, bearer

us = user_service_pb2
HUMAN, EXTERNAL, MACHINE = (
    user_pb2.USER_KIND_HUMAN,
    user_pb2.USER_KIND_EXTERNAL,
    user_pb2.USER_KIND_MACHINE,
)
Md = tuple[tuple[str, str], ...]


def uniq(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def device_id() -> str:
    """A fresh device id: exactly 8 characters."""
    return uuid.uuid4().hex[:8].upper()


@dataclass
class Persona:
    name: str
    user_id: str
    account_id: str
    token: str

    @property
    def md(self) -> Md:
        return bearer(self.token)


# -- accounts ---------------------------------------------------------------------------------


def create_account(
    server: Server,
    name: str,
    *,
    roles: Iterable[str] = (),
    consultancy_account_id: str = "",
) -> tuple[str, str]:
    """A new account with its first user (an account-admin): (account_id, user_id)."""
    resp = server.stubs.accounts.CreateAccount(
        account_service_pb2.CreateAccountRequest(
            account=account_pb2.Account(
                name=f"{name} {uniq()}",
                email=f"{uniq('acct-')}@example.com",
                roles=list(roles),
                consultancy_account_id=consultancy_account_id,
            ),
            first_user=user_pb2.User(
                kind=HUMAN,
                email=f"{uniq('owner-')}@example.com",
                first_name="Owner",
                last_name=name,
            ),
        ),
        metadata=server.admin,
    )
    return resp.account.id, resp.first_user.id


def audit_events(server: Server, account_id: str) -> list[audit_event_pb2.AuditEvent]:
    """An account's whole audit log (newest first), through AccountService.ListAuditEvents."""
    out: list[audit_event_pb2.AuditEvent] = []
    token = ""
    while True:
        resp = server.stubs.accounts.ListAuditEvents(
            account_service_pb2.ListAuditEventsRequest(
                account_id=account_id, page_size=1000, page_token=token
            ),
            metadata=server.admin,
        )
        out.extend(resp.audit_events)
        token = resp.next_page_token
        if not token:
            return out


# -- users and tokens -------------------------------------------------------------------------


def new_user(
    server: Server,
    account_id: str,
    kind: int = HUMAN,
    *,
    md: Md | None = None,
    roles: Iterable[str] = (),
    **fields: Any,
) -> us.CreateUserResponse:
    """CreateUser (as admin unless ``md``), with defaults that make a valid user of ``kind``."""
    user = user_pb2.User(kind=kind, roles=list(roles), **fields)
    if kind == HUMAN and not user.email:
        user.email = f"{uniq('u-')}@example.com"
    if kind == EXTERNAL and not user.external_id:
        user.external_id = uniq("ext-")
    return server.stubs.users.CreateUser(
        us.CreateUserRequest(account_id=account_id, user=user), metadata=md or server.admin
    )


def session_token(server: Server, user_id: str, md: Md | None = None) -> str:
    """An opaque session token for the user (SessionService.CreateSession)."""
    resp = server.stubs.sessions.CreateSession(
        session_service_pb2.CreateSessionRequest(user=user_pb2.UserRef(user_id=user_id)),
        metadata=md or server.admin,
    )
    return resp.access_token


def machine_token(server: Server, client_id: str, client_secret: str) -> str:
    return server.stubs.sessions.CreateToken(
        session_service_pb2.CreateTokenRequest(client_id=client_id, client_secret=client_secret)
    ).access_token


def human(server: Server, name: str, account_id: str, roles: Iterable[str] = ()) -> Persona:
    user = new_user(server, account_id, HUMAN, roles=roles, first_name=name).user
    return Persona(name, user.id, account_id, session_token(server, user.id))


def machine(
    server: Server, name: str, account_id: str, md: Md | None = None, roles: Iterable[str] = ()
) -> Persona:
    resp = new_user(server, account_id, MACHINE, md=md, roles=roles)
    token = machine_token(server, resp.user.client_id, resp.client_secret)
    return Persona(name, resp.user.id, account_id, token)


# -- devices ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dev:
    device_id: str
    meter_id: str
    id: str = ""


def register_devices(server: Server, account_id: str, n: int, md: Md | None = None) -> list[Dev]:
    """``n`` devices (each with a device_id and a meter_id) in a new partition."""
    md = md or server.admin
    part = server.stubs.partitions.CreatePartition(
        partition_service_pb2.CreatePartitionRequest(
            account_id=account_id, partition=partition_pb2.Partition(name=uniq("part-"))
        ),
        metadata=md,
    ).partition
    specs = [(device_id(), uniq("MTR-")) for _ in range(n)]
    resp = server.stubs.partitions.RegisterDevices(
        partition_service_pb2.RegisterDevicesRequest(
            partition_id=part.id,
            devices=[
                partition_pb2.Device(device_id=d, meter_id=m, name=f"device {d}") for d, m in specs
            ],
        ),
        metadata=md,
    )
    return [Dev(d.device_id, d.meter_id, d.id) for d in resp.devices]


def by_device(device_id: str) -> user_pb2.DeviceRef:
    return user_pb2.DeviceRef(device_id=device_id)


def by_meter(meter_id: str) -> user_pb2.DeviceRef:
    return user_pb2.DeviceRef(meter_id=meter_id)


def ref(user_id: str = "", external_id: str = "", account_id: str = "") -> user_pb2.UserRef:
    if user_id:
        return user_pb2.UserRef(user_id=user_id)
    return user_pb2.UserRef(external_id=external_id, account_id=account_id)


# -- the world the policy and error tests act in ----------------------------------------------


@dataclass
class World:
    """An intermediary account ``inter`` (consultancy: ``consult``) with its personas,
    another account ``other`` whose account-admin is the stranger, and devices."""

    server: Server
    inter: str
    consult: str
    other: str
    platform: str
    personas: dict[str, Persona]
    devices: list[Dev]  # registered in ``inter``
    other_devices: list[Dev]  # registered in ``other``
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Persona:
        return self.personas[name]


ACTORS = (
    "member",
    "account-admin",
    "intermediary-machine",
    "consultant",
    "admin-reader",
    "admin",
    "stranger",
)


def build_world(server: Server) -> World:
    me = server.stubs.users.GetMe(us.GetMeRequest(), metadata=server.admin)
    consult, _ = create_account(server, "Consultancy", roles=["consultancy"])
    inter, inter_admin = create_account(
        server, "Intermediary", roles=["intermediary"], consultancy_account_id=consult
    )
    other, other_admin = create_account(server, "Other")
    personas = {
        "admin": Persona("admin", me.user.id, me.user.account_id, server.admin_token),
        "admin-reader": human(server, "reader", me.user.account_id, ["admin-reader"]),
        "account-admin": Persona(
            "account-admin", inter_admin, inter, session_token(server, inter_admin)
        ),
        "member": human(server, "member", inter),
        "consultant": human(server, "consultant", consult, ["consultant"]),
        "stranger": Persona("stranger", other_admin, other, session_token(server, other_admin)),
    }
    personas["intermediary-machine"] = machine(
        server, "intermediary-machine", inter, md=personas["account-admin"].md
    )
    return World(
        server=server,
        inter=inter,
        consult=consult,
        other=other,
        platform=me.user.account_id,
        personas=personas,
        devices=register_devices(server, inter, 6),
        other_devices=register_devices(server, other, 2),
    )


# -- "nothing changed" ------------------------------------------------------------------------

_SNAPSHOT = (
    sa.select(users).order_by(users.c.id),
    sa.select(device_permissions).order_by(device_permissions.c.id),
    sa.select(orders).order_by(orders.c.id),
    sa.select(group_members).order_by(group_members.c.group_id, group_members.c.user_id),
    # activity times move on every call by design; everything else must not
    sa.select(sessions.c.id, sessions.c.user_id, sessions.c.revoke_time).order_by(sessions.c.id),
    sa.select(audit_table).order_by(audit_table.c.id),
)


def snapshot(server: Server) -> list[list[tuple[Any, ...]]]:
    """Every row a UserService call may write, to compare before and after a failure."""

    def frozen(v: Any) -> Any:  # JSON columns (roles, an audit event's revocation)
        if isinstance(v, list):
            return tuple(frozen(x) for x in v)
        if isinstance(v, dict):
            return tuple(sorted((k, frozen(x)) for k, x in v.items()))
        return v

    with server.app.db.read() as uow:
        return [[tuple(frozen(v) for v in r) for r in uow.conn.execute(stmt)] for stmt in _SNAPSHOT]
