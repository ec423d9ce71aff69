"""UserGroupService: thin servicer (unpack, convert, call the use case, convert back)."""

from __future__ import annotations

from typing import Any

from accounts.v1 import user_group_service_pb2 as pb
from accounts.v1 import user_group_service_pb2_grpc

from accounts_grpc.domain.principal import current_principal
from accounts_grpc.rpc.convert.accounts import account_to_proto
from accounts_grpc.rpc.convert.groups import group_input, group_to_proto, populated
from accounts_grpc.rpc.convert.partitions import partition_to_proto
from accounts_grpc.services import Services


class UserGroupServiceServicer(user_group_service_pb2_grpc.UserGroupServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services
        self.groups = services.groups
        self.memberships = services.memberships

    def CreateUserGroup(
        self, request: pb.CreateUserGroupRequest, context: Any
    ) -> pb.CreateUserGroupResponse:
        view = self.groups.create(
            current_principal(),
            request.account_id,
            group_input(request.user_group),
            request_id=request.request_id,
        )
        return pb.CreateUserGroupResponse(user_group=group_to_proto(view))

    def GetUserGroup(
        self, request: pb.GetUserGroupRequest, context: Any
    ) -> pb.GetUserGroupResponse:
        view = self.groups.get(current_principal(), request.id)
        return pb.GetUserGroupResponse(user_group=group_to_proto(view))

    def ListUserGroups(
        self, request: pb.ListUserGroupsRequest, context: Any
    ) -> pb.ListUserGroupsResponse:
        page = self.groups.list_groups(
            current_principal(),
            request.account_id,
            page_size=request.page_size,
            page_token=request.page_token,
            filter=request.filter,
            order_by=request.order_by,
        )
        return pb.ListUserGroupsResponse(
            user_groups=[group_to_proto(v) for v in page.groups],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )

    def UpdateUserGroup(
        self, request: pb.UpdateUserGroupRequest, context: Any
    ) -> pb.UpdateUserGroupResponse:
        view = self.groups.update(
            current_principal(),
            request.user_group.id,
            group_input(request.user_group),
            mask_paths=list(request.update_mask.paths),
            populated=populated(request.user_group),
        )
        return pb.UpdateUserGroupResponse(user_group=group_to_proto(view))

    def DeleteUserGroup(
        self, request: pb.DeleteUserGroupRequest, context: Any
    ) -> pb.DeleteUserGroupResponse:
        self.groups.delete(current_principal(), request.id, etag=request.etag)
        return pb.DeleteUserGroupResponse()

    def AddUserGroupMembers(
        self, request: pb.AddUserGroupMembersRequest, context: Any
    ) -> pb.AddUserGroupMembersResponse:
        view = self.memberships.add_members(current_principal(), request.id, list(request.user_ids))
        return pb.AddUserGroupMembersResponse(user_group=group_to_proto(view))

    def RemoveUserGroupMembers(
        self, request: pb.RemoveUserGroupMembersRequest, context: Any
    ) -> pb.RemoveUserGroupMembersResponse:
        view = self.memberships.remove_members(
            current_principal(), request.id, list(request.user_ids)
        )
        return pb.RemoveUserGroupMembersResponse(user_group=group_to_proto(view))

    def ListMyUserGroups(
        self, request: pb.ListMyUserGroupsRequest, context: Any
    ) -> pb.ListMyUserGroupsResponse:
        page = self.groups.list_mine(
            current_principal(), page_size=request.page_size, page_token=request.page_token
        )
        return pb.ListMyUserGroupsResponse(
            user_groups=[group_to_proto(v) for v in page.groups],
            included_partitions=[partition_to_proto(r) for r in page.included_partitions],
            included_accounts=[account_to_proto(r) for r in page.included_accounts],
            next_page_token=page.next_page_token,
            previous_page_token=page.previous_page_token,
            total_size=page.total_size,
        )
