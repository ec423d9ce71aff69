"""UserService: thin servicer (unpack, convert, call the use case, convert back)."""

from __future__ import annotations

from typing import Any

from accounts.v1 import user_service_pb2 as pb
from accounts.v1 import user_service_pb2_grpc

from accounts_grpc.domain.principal import current_principal
from accounts_grpc.rpc.convert import access as cva
from accounts_grpc.rpc.convert import users as cv
from accounts_grpc.rpc.convert.accounts import account_to_proto
from accounts_grpc.rpc.convert.users import user_to_proto
from accounts_grpc.services import Services


class UserServiceServicer(user_service_pb2_grpc.UserServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services
        self.users = services.users
        self.device_permissions = services.device_permissions
        self.charging = services.charging
        self.orders = services.orders
        self.access = services.access

    def CreateUser(self, request: pb.CreateUserRequest, context: Any) -> pb.CreateUserResponse:
        created = self.users.create_user(
            current_principal(),
            request.account_id,
            cv.user_input(request.user),
            request.request_id,
        )
        return pb.CreateUserResponse(
            user=user_to_proto(created.row), client_secret=created.client_secret
        )

    def GetUser(self, request: pb.GetUserRequest, context: Any) -> pb.GetUserResponse:
        row = self.users.get_user(
            current_principal(),
            id=request.id,
            email=request.email,
            external_id=request.external_id,
            account_id=request.account_id,
        )
        return pb.GetUserResponse(user=user_to_proto(row))

    def ListUsers(self, request: pb.ListUsersRequest, context: Any) -> pb.ListUsersResponse:
        page = self.users.list_users(
            current_principal(),
            request.account_id,
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
            order_by=request.order_by,
            kind=cv.kind_of(request.kind),
        )
        return pb.ListUsersResponse(
            users=[user_to_proto(r) for r in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )

    def UpdateUser(self, request: pb.UpdateUserRequest, context: Any) -> pb.UpdateUserResponse:
        row = self.users.update_user(
            current_principal(),
            request.user.id,
            cv.user_input(request.user),
            list(request.update_mask.paths),
        )
        return pb.UpdateUserResponse(user=user_to_proto(row))

    def DeleteUser(self, request: pb.DeleteUserRequest, context: Any) -> pb.DeleteUserResponse:
        self.users.delete_user(current_principal(), request.id, request.etag)
        return pb.DeleteUserResponse()

    def GetMe(self, request: pb.GetMeRequest, context: Any) -> pb.GetMeResponse:
        user, account = self.users.get_me(current_principal())
        return pb.GetMeResponse(user=user_to_proto(user), account=account_to_proto(account))

    def RotateClientSecret(
        self, request: pb.RotateClientSecretRequest, context: Any
    ) -> pb.RotateClientSecretResponse:
        rotated = self.users.rotate_client_secret(current_principal(), request.id)
        return pb.RotateClientSecretResponse(
            client_id=rotated.client_id, client_secret=rotated.client_secret
        )

    def AddDevicePermissions(
        self, request: pb.AddDevicePermissionsRequest, context: Any
    ) -> pb.AddDevicePermissionsResponse:
        rows = self.device_permissions.add_device_permissions(
            current_principal(), cv.user_ref(request.user), cv.device_refs(request.devices)
        )
        return pb.AddDevicePermissionsResponse(
            permissions=[cv.permission_to_proto(r) for r in rows]
        )

    def RemoveDevicePermissions(
        self, request: pb.RemoveDevicePermissionsRequest, context: Any
    ) -> pb.RemoveDevicePermissionsResponse:
        self.device_permissions.remove_device_permissions(
            current_principal(), cv.user_ref(request.user), cv.device_refs(request.devices)
        )
        return pb.RemoveDevicePermissionsResponse()

    def ListDevicePermissions(
        self, request: pb.ListDevicePermissionsRequest, context: Any
    ) -> pb.ListDevicePermissionsResponse:
        page = self.device_permissions.list_device_permissions(
            current_principal(),
            cv.user_ref(request.user),
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
        )
        return pb.ListDevicePermissionsResponse(
            permissions=[cv.permission_to_proto(r) for r in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )

    def AddChargingPermission(
        self, request: pb.AddChargingPermissionRequest, context: Any
    ) -> pb.AddChargingPermissionResponse:
        row = self.charging.add_charging_permission(
            current_principal(), cv.user_ref(request.user), cv.device_ref(request.device)
        )
        return pb.AddChargingPermissionResponse(permission=cv.permission_to_proto(row))

    def RemoveChargingPermission(
        self, request: pb.RemoveChargingPermissionRequest, context: Any
    ) -> pb.RemoveChargingPermissionResponse:
        row = self.charging.remove_charging_permission(
            current_principal(), cv.user_ref(request.user), cv.device_ref(request.device)
        )
        return pb.RemoveChargingPermissionResponse(permission=cv.permission_to_proto(row))

    def UpsertUserOrder(
        self, request: pb.UpsertUserOrderRequest, context: Any
    ) -> pb.UpsertUserOrderResponse:
        row = self.orders.upsert_user_order(
            current_principal(), cv.user_ref(request.user), cv.order_input(request.order)
        )
        return pb.UpsertUserOrderResponse(order=cv.order_to_proto(row))

    def ListUserOrders(
        self, request: pb.ListUserOrdersRequest, context: Any
    ) -> pb.ListUserOrdersResponse:
        page = self.orders.list_user_orders(
            current_principal(),
            cv.user_ref(request.user),
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
            order_by=request.order_by,
        )
        return pb.ListUserOrdersResponse(
            orders=[cv.order_to_proto(r) for r in page.rows],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )

    def CheckAccess(self, request: pb.CheckAccessRequest, context: Any) -> pb.CheckAccessResponse:
        user_id, decisions = self.access.check_access(
            current_principal(), cva.check_inputs(request.checks), user_id=request.user_id,
            token=request.token,
        )
        return pb.CheckAccessResponse(
            user_id=user_id,
            decisions=[cva.decision_to_proto(c, d)
                       for c, d in zip(request.checks, decisions, strict=True)],
        )

    def ListAccessibleDevices(
        self, request: pb.ListAccessibleDevicesRequest, context: Any
    ) -> pb.ListAccessibleDevicesResponse:
        page = self.access.list_accessible_devices(
            current_principal(),
            request.user_id,
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
            order_by=request.order_by,
        )
        return pb.ListAccessibleDevicesResponse(
            devices=[cva.accessible_to_proto(a) for a in page.devices],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )
