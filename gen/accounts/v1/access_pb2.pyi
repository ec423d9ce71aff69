from accounts.v1 import partition_pb2 as _partition_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AccessAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_ACTION_UNSPECIFIED: _ClassVar[AccessAction]
    ACCESS_ACTION_READ: _ClassVar[AccessAction]
    ACCESS_ACTION_CONTROL: _ClassVar[AccessAction]
    ACCESS_ACTION_CHARGE: _ClassVar[AccessAction]
ACCESS_ACTION_UNSPECIFIED: AccessAction
ACCESS_ACTION_READ: AccessAction
ACCESS_ACTION_CONTROL: AccessAction
ACCESS_ACTION_CHARGE: AccessAction

class AccessCheck(_message.Message):
    __slots__ = ("action", "device_id", "meter_id", "partition_id", "account_id")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    METER_ID_FIELD_NUMBER: _ClassVar[int]
    PARTITION_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    action: AccessAction
    device_id: str
    meter_id: str
    partition_id: str
    account_id: str
    def __init__(self, action: _Optional[_Union[AccessAction, str]] = ..., device_id: _Optional[str] = ..., meter_id: _Optional[str] = ..., partition_id: _Optional[str] = ..., account_id: _Optional[str] = ...) -> None: ...

class AccessDecision(_message.Message):
    __slots__ = ("check", "allowed", "rule", "reason", "message")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    check: AccessCheck
    allowed: bool
    rule: str
    reason: str
    message: str
    def __init__(self, check: _Optional[_Union[AccessCheck, _Mapping]] = ..., allowed: _Optional[bool] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class AccessGrant(_message.Message):
    __slots__ = ("action", "rule")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    action: AccessAction
    rule: str
    def __init__(self, action: _Optional[_Union[AccessAction, str]] = ..., rule: _Optional[str] = ...) -> None: ...

class AccessibleDevice(_message.Message):
    __slots__ = ("device", "grants")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    device: _partition_pb2.Device
    grants: _containers.RepeatedCompositeFieldContainer[AccessGrant]
    def __init__(self, device: _Optional[_Union[_partition_pb2.Device, _Mapping]] = ..., grants: _Optional[_Iterable[_Union[AccessGrant, _Mapping]]] = ...) -> None: ...
