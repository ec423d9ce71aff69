import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RevocationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVOCATION_KIND_UNSPECIFIED: _ClassVar[RevocationKind]
    REVOCATION_KIND_SESSION_REVOKED: _ClassVar[RevocationKind]
    REVOCATION_KIND_USER_DELETED: _ClassVar[RevocationKind]
    REVOCATION_KIND_ACCOUNT_CLOSED: _ClassVar[RevocationKind]
    REVOCATION_KIND_ROLES_CHANGED: _ClassVar[RevocationKind]
    REVOCATION_KIND_GROUP_MEMBERSHIP_CHANGED: _ClassVar[RevocationKind]
    REVOCATION_KIND_DEVICE_PERMISSION_REMOVED: _ClassVar[RevocationKind]
    REVOCATION_KIND_SIGNING_KEY_RETIRED: _ClassVar[RevocationKind]
    REVOCATION_KIND_CREDENTIALS_ROTATED: _ClassVar[RevocationKind]
REVOCATION_KIND_UNSPECIFIED: RevocationKind
REVOCATION_KIND_SESSION_REVOKED: RevocationKind
REVOCATION_KIND_USER_DELETED: RevocationKind
REVOCATION_KIND_ACCOUNT_CLOSED: RevocationKind
REVOCATION_KIND_ROLES_CHANGED: RevocationKind
REVOCATION_KIND_GROUP_MEMBERSHIP_CHANGED: RevocationKind
REVOCATION_KIND_DEVICE_PERMISSION_REMOVED: RevocationKind
REVOCATION_KIND_SIGNING_KEY_RETIRED: RevocationKind
REVOCATION_KIND_CREDENTIALS_ROTATED: RevocationKind

class AuditEvent(_message.Message):
    __slots__ = ("id", "account_id", "actor_user_id", "action", "resource_type", "resource_id", "changed_fields", "request_id", "create_time", "update_time", "etag", "cursor", "revocation", "delegation_actor_user_id", "delegation_subject_user_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_USER_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_FIELD_NUMBER: _ClassVar[int]
    DELEGATION_ACTOR_USER_ID_FIELD_NUMBER: _ClassVar[int]
    DELEGATION_SUBJECT_USER_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    account_id: str
    actor_user_id: str
    action: str
    resource_type: str
    resource_id: str
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    etag: str
    cursor: str
    revocation: Revocation
    delegation_actor_user_id: str
    delegation_subject_user_id: str
    def __init__(self, id: _Optional[str] = ..., account_id: _Optional[str] = ..., actor_user_id: _Optional[str] = ..., action: _Optional[str] = ..., resource_type: _Optional[str] = ..., resource_id: _Optional[str] = ..., changed_fields: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ..., cursor: _Optional[str] = ..., revocation: _Optional[_Union[Revocation, _Mapping]] = ..., delegation_actor_user_id: _Optional[str] = ..., delegation_subject_user_id: _Optional[str] = ...) -> None: ...

class Revocation(_message.Message):
    __slots__ = ("kind", "subjects", "session_ids", "key_ids", "account_ids", "issued_before")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    KEY_IDS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_IDS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    kind: RevocationKind
    subjects: _containers.RepeatedScalarFieldContainer[str]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    key_ids: _containers.RepeatedScalarFieldContainer[str]
    account_ids: _containers.RepeatedScalarFieldContainer[str]
    issued_before: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[_Union[RevocationKind, str]] = ..., subjects: _Optional[_Iterable[str]] = ..., session_ids: _Optional[_Iterable[str]] = ..., key_ids: _Optional[_Iterable[str]] = ..., account_ids: _Optional[_Iterable[str]] = ..., issued_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
