"""Helpers for the groups, partitions and building-story tests (no tests here).

Everything is made through the public API (accounts with AccountService.CreateAccount,
users with UserService.CreateUser); only the audit log and "nothing changed" snapshots
are read from the database directly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import sqlalchemy as sa
from accounts.v1 import (
    account_pb2,
    account_service_pb2,
    partition_pb2,
    partition_service_pb2,
    session_service_pb2,
    user_group_pb2,
    user_group_service_pb2,
    user_pb2,
    user_service_pb2,
)

from accounts_grpc.store.tables import (
    audit_events,
    device_permissions,
    devices,
    group_members,
    group_partitions,
    partitions,
    user_groups,
)
from tests.support import Server, bearer, failure

KIND = {
    "HUMAN": user_pb2.USER_KIND_HUMAN,
    "EXTERNAL": user_pb2.USER_KIND_EXTERNAL,
    "MACHINE": user_pb2.USER_KIND_MACHINE,
}


def uniq(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


@dataclass
class Persona:
    name: str
    user_id: str
    account_id: str
    kind: str
    token: str

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.token)


# -- accounts and users ------------------------------------------------------------------


def create_account(
    server: Server, name: str, *, roles: tuple[str, ...] = (), consultancy_account_id: str = ""
) -> tuple[str, str]:
    """A new account and its first user (an account-admin); returns (account_id, user_id)."""
    resp = server.stubs.accounts.CreateAccount(
        account_service_pb2.CreateAccountRequest(
            account=account_pb2.Account(
                name=name,
                email=f"{uniq('acct-')}@example.com",
                roles=list(roles),
                consultancy_account_id=consultancy_account_id,
            ),
            first_user=user_pb2.User(
                kind=user_pb2.USER_KIND_HUMAN,
                email=f"{uniq('owner-')}@example.com",
                first_name="Owner",
                last_name=name,
            ),
        ),
        metadata=server.admin,
    )
    return resp.account.id, resp.first_user.id


def close_account(server: Server, account_id: str) -> None:
    server.stubs.accounts.CloseAccount(
        account_service_pb2.CloseAccountRequest(id=account_id), metadata=server.admin
    )


def create_user(
    server: Server,
    account_id: str,
    *,
    kind: str = "HUMAN",
    roles: tuple[str, ...] = (),
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> tuple[str, str, str]:
    """A user of ``account_id`` (made by the admin unless ``metadata`` says who);
    returns (user_id, client_id, client_secret)."""
    user = user_pb2.User(kind=KIND[kind], roles=list(roles))
    if kind == "HUMAN":
        user.email = f"{uniq('u-')}@example.com"
        user.first_name = "Test"
    elif kind == "EXTERNAL":
        user.external_id = uniq("ext-")
    resp = server.stubs.users.CreateUser(
        user_service_pb2.CreateUserRequest(account_id=account_id, user=user),
        metadata=metadata or server.admin,
    )
    return resp.user.id, resp.user.client_id, resp.client_secret


def human(
    server: Server, name: str, account_id: str, roles: tuple[str, ...] = (), user_id: str = ""
) -> Persona:
    """A HUMAN user (made unless ``user_id`` names one) with an honest JWT."""
    if not user_id:
        user_id, _, _ = create_user(server, account_id, kind="HUMAN", roles=roles)
    token = server.app.jwts.issue(
        user_id=user_id, account_id=account_id, roles=[*roles, "member"], kind="HUMAN"
    ).token
    return Persona(name, user_id, account_id, "HUMAN", token)


def machine(server: Server, name: str, account_id: str, roles: tuple[str, ...] = ()) -> Persona:
    """A MACHINE user with a token from SessionService.CreateToken."""
    user_id, client_id, secret = create_user(server, account_id, kind="MACHINE", roles=roles)
    return Persona(name, user_id, account_id, "MACHINE", machine_token(server, client_id, secret))


def machine_token(server: Server, client_id: str, secret: str) -> str:
    return server.stubs.sessions.CreateToken(
        session_service_pb2.CreateTokenRequest(client_id=client_id, client_secret=secret)
    ).access_token


def admin(server: Server) -> Persona:
    me = server.stubs.users.GetMe(user_service_pb2.GetMeRequest(), metadata=server.admin)
    return Persona("admin", me.user.id, me.user.account_id, "MACHINE", server.admin_token)


# -- groups, partitions, devices through the API -----------------------------------------


def make_partition(server: Server, account_id: str, name: str = "", description: str = "") -> Any:
    return server.stubs.partitions.CreatePartition(
        partition_service_pb2.CreatePartitionRequest(
            account_id=account_id,
            partition=partition_pb2.Partition(name=name or uniq("p-"), description=description),
        ),
        metadata=server.admin,
    ).partition


def make_group(
    server: Server,
    account_id: str,
    name: str = "",
    *,
    description: str = "",
    roles: tuple[str, ...] = (),
    partition_ids: tuple[str, ...] = (),
    members: tuple[str, ...] = (),
) -> Any:
    g = server.stubs.groups.CreateUserGroup(
        user_group_service_pb2.CreateUserGroupRequest(
            account_id=account_id,
            user_group=user_group_pb2.UserGroup(
                name=name or uniq("g-"),
                description=description,
                roles=list(roles),
                partition_ids=list(partition_ids),
            ),
        ),
        metadata=server.admin,
    ).user_group
    if members:
        g = server.stubs.groups.AddUserGroupMembers(
            user_group_service_pb2.AddUserGroupMembersRequest(id=g.id, user_ids=list(members)),
            metadata=server.admin,
        ).user_group
    return g


def register(server: Server, partition_id: str, *devs: dict[str, str]) -> list[Any]:
    return list(
        server.stubs.partitions.RegisterDevices(
            partition_service_pb2.RegisterDevicesRequest(
                partition_id=partition_id, devices=[partition_pb2.Device(**d) for d in devs]
            ),
            metadata=server.admin,
        ).devices
    )


def device_id() -> str:
    """A fresh 8-character device id."""
    return uuid.uuid4().hex[:8].upper()


# -- looking at the database -------------------------------------------------------------

_SNAPSHOT_TABLES = (
    user_groups,
    group_members,
    group_partitions,
    partitions,
    devices,
    device_permissions,
    audit_events,
)


def snapshot(server: Server) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables these services write, to prove a failed call changed nothing."""
    out = {}
    with server.app.db.read() as uow:
        for t in _SNAPSHOT_TABLES:
            rows = uow.conn.execute(sa.select(t)).all()
            out[t.name] = sorted(tuple(map(repr, r)) for r in rows)
    return out


def events(server: Server, resource_id: str) -> list[Any]:
    """The audit events about one resource, oldest first."""
    with server.app.db.read() as uow:
        return list(
            uow.conn.execute(
                sa.select(audit_events)
                .where(audit_events.c.resource_id == resource_id)
                .order_by(audit_events.c.create_time, audit_events.c.id)
            )
        )


# -- the policy world: one tenant and every kind of caller --------------------------------

PERSONAS = (
    "member",
    "account-admin",
    "intermediary machine",
    "consultant",
    "admin-reader",
    "admin",
    "stranger",
)


@dataclass
class PolicyWorld:
    """Account A (an ``intermediary`` account whose consultancy is C) and its data:
    partitions ``reach`` (reached by the member's group) and ``other``, one device in
    each, groups ``mine`` (the member's) and ``theirs``. Every fixture name contains
    "fixture" so lists can be filtered down to them."""

    account_id: str
    personas: dict[str, Persona]
    reach: Any
    other: Any
    device_reach: Any
    device_other: Any
    group_mine: Any
    group_theirs: Any
    bystander: Persona  # a plain user of A that write rows add to and remove from groups


def policy_world(server: Server) -> PolicyWorld:
    consultancy_id, _ = create_account(server, "Consultancy", roles=("consultancy",))
    account_id, owner_id = create_account(
        server, "Tenant A", roles=("intermediary",), consultancy_account_id=consultancy_id
    )
    stranger_account, stranger_id = create_account(server, "Stranger Co")
    readers_account, _ = create_account(server, "Readers")
    reach = make_partition(server, account_id, "fixture reach")
    other = make_partition(server, account_id, "fixture other")
    [d_reach] = register(server, reach.id, dict(device_id=device_id(), name="fixture d-reach"))
    [d_other] = register(server, other.id, dict(device_id=device_id(), name="fixture d-other"))
    member = human(server, "member", account_id)
    personas = {
        "member": member,
        "account-admin": human(
            server, "account-admin", account_id, ("account-admin",), user_id=owner_id
        ),
        "intermediary machine": machine(server, "intermediary machine", account_id),
        "consultant": human(server, "consultant", consultancy_id, ("consultant",)),
        "admin-reader": human(server, "admin-reader", readers_account, ("admin-reader",)),
        "admin": admin(server),
        "stranger": human(
            server, "stranger", stranger_account, ("account-admin",), user_id=stranger_id
        ),
    }
    mine = make_group(
        server, account_id, "fixture mine", partition_ids=(reach.id,), members=(member.user_id,)
    )
    theirs = make_group(server, account_id, "fixture theirs", partition_ids=(other.id,))
    bystander = human(server, "bystander", account_id)
    return PolicyWorld(
        account_id, personas, reach, other, d_reach, d_other, mine, theirs, bystander
    )


# -- the policy tables of groups and partitions ----------------------------------------------

OK = "ok"
ROLE_REQUIRED = (grpc.StatusCode.PERMISSION_DENIED, "ROLE_REQUIRED")
NO_ACCOUNT = (grpc.StatusCode.NOT_FOUND, "ACCOUNT_NOT_FOUND")
Outcome = Any  # "ok" | frozenset[str] | tuple[StatusCode, str]
#: (server, world) -> (method, request, what to read off a successful response, or None)
Prepare = Callable[[Server, PolicyWorld], tuple[str, Any, Callable[[Any], Any] | None]]
#: "<RPC> <case>" -> (how to make the call, the outcome expected for each persona)
PolicyTable = dict[str, tuple[Prepare, dict[str, Outcome]]]


def check_table_covers(table: PolicyTable, service: Any) -> None:
    """Every RPC of ``service`` (a ServiceDescriptor) has a row, every row every caller."""
    assert {label.split(" ")[0] for label in table} == set(service.methods_by_name)
    for _, row in table.values():
        assert set(row) == set(PERSONAS)


def check_cell(server: Server, world: PolicyWorld, stub: Any, table: PolicyTable, rpc: str,
               persona: str) -> None:
    """Make one call of the table as ``persona``; its outcome must be the cell's, and a
    refused call must change nothing."""
    prepare, row = table[rpc]
    expected = row[persona]
    method, request, extract = prepare(server, world)
    caller = world.personas[persona]
    before = snapshot(server)
    try:
        resp = getattr(stub, method)(request, metadata=caller.md)
    except grpc.RpcError as e:
        f = failure(e)
        got: Outcome = (f.code, f.reason)
        assert snapshot(server) == before, "a denied call changed something"
    else:
        got = extract(resp) if extract else OK
    assert got == expected, f"{persona} → {rpc}: expected {expected}, got {got}"
