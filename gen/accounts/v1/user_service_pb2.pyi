from accounts.v1 import access_pb2 as _access_pb2
from accounts.v1 import account_pb2 as _account_pb2
from accounts.v1 import options_pb2 as _options_pb2
from accounts.v1 import user_pb2 as _user_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateUserRequest(_message.Message):
    __slots__ = ("account_id", "user", "request_id")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    user: _user_pb2.User
    request_id: str
    def __init__(self, account_id: _Optional[str] = ..., user: _Optional[_Union[_user_pb2.User, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("user", "client_secret")
    USER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.User
    client_secret: str
    def __init__(self, user: _Optional[_Union[_user_pb2.User, _Mapping]] = ..., client_secret: _Optional[str] = ...) -> None: ...

class GetUserRequest(_message.Message):
    __slots__ = ("id", "email", "external_id", "account_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    email: str
    external_id: str
    account_id: str
    def __init__(self, id: _Optional[str] = ..., email: _Optional[str] = ..., external_id: _Optional[str] = ..., account_id: _Optional[str] = ...) -> None: ...

class GetUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.User
    def __init__(self, user: _Optional[_Union[_user_pb2.User, _Mapping]] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("account_id", "page_size", "page_token", "filter", "order_by", "kind")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    page_size: int
    page_token: str
    filter: str
    order_by: str
    kind: _user_pb2.UserKind
    def __init__(self, account_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ..., kind: _Optional[_Union[_user_pb2.UserKind, str]] = ...) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users", "next_page_token", "previous_page_token", "total_size")
    USERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[_user_pb2.User]
    next_page_token: str
    previous_page_token: str
    total_size: int
    def __init__(self, users: _Optional[_Iterable[_Union[_user_pb2.User, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., previous_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("user", "update_mask")
    USER_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.User
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, user: _Optional[_Union[_user_pb2.User, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateUserResponse(_message.Message):
    __slots__ = ("user",)
    USER_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.User
    def __init__(self, user: _Optional[_Union[_user_pb2.User, _Mapping]] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("id", "etag")
    ID_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    id: str
    etag: str
    def __init__(self, id: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetMeResponse(_message.Message):
    __slots__ = ("user", "account")
    USER_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.User
    account: _account_pb2.Account
    def __init__(self, user: _Optional[_Union[_user_pb2.User, _Mapping]] = ..., account: _Optional[_Union[_account_pb2.Account, _Mapping]] = ...) -> None: ...

class RotateClientSecretRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RotateClientSecretResponse(_message.Message):
    __slots__ = ("client_id", "client_secret")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SECRET_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    client_secret: str
    def __init__(self, client_id: _Optional[str] = ..., client_secret: _Optional[str] = ...) -> None: ...

class AddDevicePermissionsRequest(_message.Message):
    __slots__ = ("user", "devices")
    USER_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.UserRef
    devices: _containers.RepeatedCompositeFieldContainer[_user_pb2.DeviceRef]
    def __init__(self, user: _Optional[_Union[_user_pb2.UserRef, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[_user_pb2.DeviceRef, _Mapping]]] = ...) -> None: ...

class AddDevicePermissionsResponse(_message.Message):
    __slots__ = ("permissions",)
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    permissions: _containers.RepeatedCompositeFieldContainer[_user_pb2.DevicePermission]
    def __init__(self, permissions: _Optional[_Iterable[_Union[_user_pb2.DevicePermission, _Mapping]]] = ...) -> None: ...

class RemoveDevicePermissionsRequest(_message.Message):
    __slots__ = ("user", "devices")
    USER_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.UserRef
    devices: _containers.RepeatedCompositeFieldContainer[_user_pb2.DeviceRef]
    def __init__(self, user: _Optional[_Union[_user_pb2.UserRef, _Mapping]] = ..., devices: _Optional[_Iterable[_Union[_user_pb2.DeviceRef, _Mapping]]] = ...) -> None: ...

class RemoveDevicePermissionsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDevicePermissionsRequest(_message.Message):
    __slots__ = ("user", "page_size", "page_token", "filter")
    USER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.UserRef
    page_size: int
    page_token: str
    filter: str
    def __init__(self, user: _Optional[_Union[_user_pb2.UserRef, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ...) -> None: ...

class ListDevicePermissionsResponse(_message.Message):
    __slots__ = ("permissions", "next_page_token", "previous_page_token", "total_size")
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    permissions: _containers.RepeatedCompositeFieldContainer[_user_pb2.DevicePermission]
    next_page_token: str
    previous_page_token: str
    total_size: int
    def __init__(self, permissions: _Optional[_Iterable[_Union[_user_pb2.DevicePermission, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., previous_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class AddChargingPermissionRequest(_message.Message):
    __slots__ = ("user", "device")
    USER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.UserRef
    device: _user_pb2.DeviceRef
    def __init__(self, user: _Optional[_Union[_user_pb2.UserRef, _Mapping]] = ..., device: _Optional[_Union[_user_pb2.DeviceRef, _Mapping]] = ...) -> None: ...

class AddChargingPermissionResponse(_message.Message):
    __slots__ = ("permission",)
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    permission: _user_pb2.DevicePermission
    def __init__(self, permission: _Optional[_Union[_user_pb2.DevicePermission, _Mapping]] = ...) -> None: ...

class RemoveChargingPermissionRequest(_message.Message):
    __slots__ = ("user", "device")
    USER_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.UserRef
    device: _user_pb2.DeviceRef
    def __init__(self, user: _Optional[_Union[_user_pb2.UserRef, _Mapping]] = ..., device: _Optional[_Union[_user_pb2.DeviceRef, _Mapping]] = ...) -> None: ...

class RemoveChargingPermissionResponse(_message.Message):
    __slots__ = ("permission",)
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    permission: _user_pb2.DevicePermission
    def __init__(self, permission: _Optional[_Union[_user_pb2.DevicePermission, _Mapping]] = ...) -> None: ...

class UpsertUserOrderRequest(_message.Message):
    __slots__ = ("user", "order")
    USER_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.UserRef
    order: _user_pb2.Order
    def __init__(self, user: _Optional[_Union[_user_pb2.UserRef, _Mapping]] = ..., order: _Optional[_Union[_user_pb2.Order, _Mapping]] = ...) -> None: ...

class UpsertUserOrderResponse(_message.Message):
    __slots__ = ("order",)
    ORDER_FIELD_NUMBER: _ClassVar[int]
    order: _user_pb2.Order
    def __init__(self, order: _Optional[_Union[_user_pb2.Order, _Mapping]] = ...) -> None: ...

class ListUserOrdersRequest(_message.Message):
    __slots__ = ("user", "page_size", "page_token", "filter", "order_by")
    USER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    user: _user_pb2.UserRef
    page_size: int
    page_token: str
    filter: str
    order_by: str
    def __init__(self, user: _Optional[_Union[_user_pb2.UserRef, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListUserOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token", "previous_page_token", "total_size")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[_user_pb2.Order]
    next_page_token: str
    previous_page_token: str
    total_size: int
    def __init__(self, orders: _Optional[_Iterable[_Union[_user_pb2.Order, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., previous_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...

class CheckAccessRequest(_message.Message):
    __slots__ = ("user_id", "token", "checks")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    token: str
    checks: _containers.RepeatedCompositeFieldContainer[_access_pb2.AccessCheck]
    def __init__(self, user_id: _Optional[str] = ..., token: _Optional[str] = ..., checks: _Optional[_Iterable[_Union[_access_pb2.AccessCheck, _Mapping]]] = ...) -> None: ...

class CheckAccessResponse(_message.Message):
    __slots__ = ("user_id", "decisions")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    decisions: _containers.RepeatedCompositeFieldContainer[_access_pb2.AccessDecision]
    def __init__(self, user_id: _Optional[str] = ..., decisions: _Optional[_Iterable[_Union[_access_pb2.AccessDecision, _Mapping]]] = ...) -> None: ...

class ListAccessibleDevicesRequest(_message.Message):
    __slots__ = ("user_id", "page_size", "page_token", "filter", "order_by")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    page_size: int
    page_token: str
    filter: str
    order_by: str
    def __init__(self, user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., filter: _Optional[str] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListAccessibleDevicesResponse(_message.Message):
    __slots__ = ("devices", "next_page_token", "previous_page_token", "total_size")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[_access_pb2.AccessibleDevice]
    next_page_token: str
    previous_page_token: str
    total_size: int
    def __init__(self, devices: _Optional[_Iterable[_Union[_access_pb2.AccessibleDevice, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., previous_page_token: _Optional[str] = ..., total_size: _Optional[int] = ...) -> None: ...
