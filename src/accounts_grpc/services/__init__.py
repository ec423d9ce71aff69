"""Use cases, one module per area. ``Services`` bundles them for the servicers."""

from __future__ import annotations

from dataclasses import dataclass

from accounts_grpc.services.access import AccessService
from accounts_grpc.services.accounts import AccountsService
from accounts_grpc.services.audit_log import AuditLogService
from accounts_grpc.services.charging import ChargingService
from accounts_grpc.services.deps import Deps
from accounts_grpc.services.device_permissions import DevicePermissionsService
from accounts_grpc.services.devices import DevicesService
from accounts_grpc.services.events import EventsService
from accounts_grpc.services.exchange import ExchangeService
from accounts_grpc.services.groups import GroupsService
from accounts_grpc.services.memberships import MembershipsService
from accounts_grpc.services.orders import OrdersService
from accounts_grpc.services.partitions import PartitionsService
from accounts_grpc.services.sessions import SessionsService
from accounts_grpc.services.users import UsersService


@dataclass(frozen=True)
class Services:
    deps: Deps
    accounts: AccountsService
    audit_log: AuditLogService
    users: UsersService
    device_permissions: DevicePermissionsService
    charging: ChargingService
    orders: OrdersService
    groups: GroupsService
    memberships: MembershipsService
    partitions: PartitionsService
    devices: DevicesService
    sessions: SessionsService
    exchange: ExchangeService
    access: AccessService
    events: EventsService

    @classmethod
    def build(cls, deps: Deps) -> Services:
        return cls(
            deps=deps,
            accounts=AccountsService(deps),
            audit_log=AuditLogService(deps),
            users=UsersService(deps),
            device_permissions=DevicePermissionsService(deps),
            charging=ChargingService(deps),
            orders=OrdersService(deps),
            groups=GroupsService(deps),
            memberships=MembershipsService(deps),
            partitions=PartitionsService(deps),
            devices=DevicesService(deps),
            sessions=SessionsService(deps),
            exchange=ExchangeService(deps),
            access=AccessService(deps),
            events=EventsService(deps),
        )
