"""The services this server exposes, and what their protos declare about each RPC."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from accounts.v1 import (
    account_service_pb2,
    options_pb2,
    partition_service_pb2,
    session_service_pb2,
    user_group_service_pb2,
    user_service_pb2,
)
from google.protobuf import descriptor as _descriptor

SERVICE_MODULES: tuple[ModuleType, ...] = (
    account_service_pb2,
    user_service_pb2,
    user_group_service_pb2,
    partition_service_pb2,
    session_service_pb2,
)


def service_descriptors() -> list[_descriptor.ServiceDescriptor]:
    out = []
    for mod in SERVICE_MODULES:
        out.extend(mod.DESCRIPTOR.services_by_name.values())
    return out


def service_names() -> list[str]:
    return [s.full_name for s in service_descriptors()]


@dataclass(frozen=True)
class AccessRule:
    public: bool
    roles: frozenset[str]


def access_rules() -> dict[str, AccessRule]:
    """``/pkg.Service/Method`` → its declared AccessRule; methods without one are absent."""
    rules: dict[str, AccessRule] = {}
    ext: Any = options_pb2.access  # the generated stub types it as a plain FieldDescriptor
    for svc in service_descriptors():
        for m in svc.methods:
            opts = m.GetOptions()
            if not opts.HasExtension(ext):
                continue
            rule: options_pb2.AccessRule = opts.Extensions[ext]
            rules[f"/{svc.full_name}/{m.name}"] = AccessRule(rule.public, frozenset(rule.roles))
    return rules
