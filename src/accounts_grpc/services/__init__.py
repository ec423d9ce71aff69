"""Use cases, one module per area. ``Services`` bundles them for the servicers."""

from __future__ import annotations

from dataclasses import dataclass

from accounts_grpc.services.accounts import AccountsService
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.groups import GroupsService
from accounts_grpc.services.partitions import PartitionsService
from accounts_grpc.services.sessions import SessionsService
from accounts_grpc.services.users import UsersService


@dataclass(frozen=True)
class Services:
    deps: Deps
    accounts: AccountsService
    users: UsersService
    groups: GroupsService
    partitions: PartitionsService
    sessions: SessionsService

    @classmethod
    def build(cls, deps: Deps) -> Services:
        return cls(
            deps=deps,
            accounts=AccountsService(deps),
            users=UsersService(deps),
            groups=GroupsService(deps),
            partitions=PartitionsService(deps),
            sessions=SessionsService(deps),
        )
