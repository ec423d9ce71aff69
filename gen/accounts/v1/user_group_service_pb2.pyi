from accounts.v1 import account_pb2 as _account_pb2
from accounts.v1 import options_pb2 as _options_pb2
from accounts.v1 import partition_pb2 as _partition_pb2
from accounts.v1 import user_group_pb2 as _user_group_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateUserGroupRequest(_message.Message):
    __slots__ = ("account_id", "user_group", "request_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_GROUP_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    user_group: _user_group_pb2.UserGroup
    request_id: str
    def __init__(self, account_id: _Optional[str] = ..., user_group: _Optional[_Union[_user_group_pb2.UserGroup, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateUserGroupResponse(_message.Message):
    __slots__ = ("user_group",)
    USER_GROUP_FIELD_NUMBER: _ClassVar[int]
    user_group: _user_group_pb2.UserGroup
    def __init__(self, user_group: _Optional[_Union[_user_group_pb2.UserGroup, _Mapping]] = ...) -> None: ...

class GetUserGroupRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetUserGroupResponse(_message.Message):
    __slots__ = ("user_group",)
    USER_GROUP_FIELD_NUMBER: _ClassVar[int]
    user_group: _user_group_pb2.UserGroup
    def __init__(self, user_group: _Optional[_Union[_user_group_pb2.UserGroup, _Mapping]] = ...) -> None: ...

class ListUserGroupsRequest(_message.Message):
    __slots__ = ("account_id", "page_size", "page_token", "filter", "order_by")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    page_size: int
    page_token: str
    filter: str
    order_by: str
    def __init__(self, account_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListUserGroupsResponse(_message.Message):
    __slots__ = ("user_groups", "next_page_token", "previous_page_token", "total_size")
    USER_GROUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    user_groups: _containers.RepeatedCompositeFieldContainer[_user_group_pb2.UserGroup]
    next_page_token: str
    previous_page_token: str
    total_size: int
    def __init__(self, user_groups: _Optional[_Iterable[_Union[_user_group_pb2.UserGroup, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., previous_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class UpdateUserGroupRequest(_message.Message):
    __slots__ = ("user_group", "update_mask")
    USER_GROUP_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    user_group: _user_group_pb2.UserGroup
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, user_group: _Optional[_Union[_user_group_pb2.UserGroup, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateUserGroupResponse(_message.Message):
    __slots__ = ("user_group",)
    USER_GROUP_FIELD_NUMBER: _ClassVar[int]
    user_group: _user_group_pb2.UserGroup
    def __init__(self, user_group: _Optional[_Union[_user_group_pb2.UserGroup, _Mapping]] = ...) -> None: ...

class DeleteUserGroupRequest(_message.Message):
    __slots__ = ("id", "etag")
    ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    id: str
    etag: str
    def __init__(self, id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteUserGroupResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AddUserGroupMembersRequest(_message.Message):
    __slots__ = ("id", "user_ids")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AddUserGroupMembersResponse(_message.Message):
    __slots__ = ("user_group",)
    USER_GROUP_FIELD_NUMBER: _ClassVar[int]
    user_group: _user_group_pb2.UserGroup
    def __init__(self, user_group: _Optional[_Union[_user_group_pb2.UserGroup, _Mapping]] = ...) -> None: ...

class RemoveUserGroupMembersRequest(_message.Message):
    __slots__ = ("id", "user_ids")
    ID_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveUserGroupMembersResponse(_message.Message):
    __slots__ = ("user_group",)
    USER_GROUP_FIELD_NUMBER: _ClassVar[int]
    user_group: _user_group_pb2.UserGroup
    def __init__(self, user_group: _Optional[_Union[_user_group_pb2.UserGroup, _Mapping]] = ...) -> None: ...

class ListMyUserGroupsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMyUserGroupsResponse(_message.Message):
    __slots__ = ("user_groups", "included_partitions", "included_accounts", "next_page_token", "previous_page_token", "total_size")
    USER_GROUPS_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    INCLUDED_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    user_groups: _containers.RepeatedCompositeFieldContainer[_user_group_pb2.UserGroup]
    included_partitions: _containers.RepeatedCompositeFieldContainer[_partition_pb2.Partition]
    included_accounts: _containers.RepeatedCompositeFieldContainer[_account_pb2.Account]
    next_page_token: str
    previous_page_token: str
    total_size: int
    def __init__(self, user_groups: _Optional[_Iterable[_Union[_user_group_pb2.UserGroup, _Mapping]]] = ..., included_partitions: _Optional[_Iterable[_Union[_partition_pb2.Partition, _Mapping]]] = ..., included_accounts: _Optional[_Iterable[_Union[_account_pb2.Account, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., previous_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...
