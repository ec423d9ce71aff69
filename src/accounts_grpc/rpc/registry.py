"""The services this server exposes, and what their protos declare about each RPC.

``SERVICERS`` is the one list: adding a service is one entry here. Everything else
derives from it: the service descriptors and names, the access rules, the gRPC
registration (``grpc_binding``) and the REST routes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
from accounts.v1 import options_pb2
from google.protobuf import descriptor as _descriptor

from accounts_grpc.rpc.account_servicer import AccountServiceServicer
from accounts_grpc.rpc.partition_servicer import PartitionServiceServicer
from accounts_grpc.rpc.session_servicer import SessionServiceServicer
from accounts_grpc.rpc.user_group_servicer import UserGroupServiceServicer
from accounts_grpc.rpc.user_servicer import UserServiceServicer

#: Every service this server runs, one entry each: its servicer class, built from the
#: use cases (``Services``). Its generated base class names the service, its module and
#: the function that registers it on a grpc.Server (``grpc_binding``).
SERVICERS: tuple[type, ...] = (
    AccountServiceServicer,
    UserServiceServicer,
    UserGroupServiceServicer,
    PartitionServiceServicer,
    SessionServiceServicer,
)

AddToServer = Callable[[Any, grpc.Server], None]


def _generated_base(servicer_class: type) -> type:
    """The ``<Service>Servicer`` base class protoc's gRPC plugin wrote into ``*_pb2_grpc``."""
    base = next((c for c in servicer_class.__mro__ if c.__module__.endswith("_pb2_grpc")),
                None)
    if base is None or not base.__name__.endswith("Servicer"):
        raise TypeError(f"{servicer_class.__qualname__} does not subclass a generated "
                        "<Service>Servicer")
    return base


def _pb2(servicer_class: type) -> ModuleType:
    return importlib.import_module(_generated_base(servicer_class).__module__.removesuffix("_grpc"))


def grpc_binding(servicer_class: type) -> tuple[str, AddToServer]:
    """(the service's full name, its ``add_<Service>Servicer_to_server``)."""
    base = _generated_base(servicer_class)
    service = _pb2(servicer_class).DESCRIPTOR.services_by_name[base.__name__.removesuffix(
        "Servicer")]
    add = getattr(importlib.import_module(base.__module__), f"add_{base.__name__}_to_server")
    return service.full_name, add



def service_descriptors() -> list[_descriptor.ServiceDescriptor]:
    """The services of ``SERVICERS``, in its order."""
    return [
        _pb2(c).DESCRIPTOR.services_by_name[_generated_base(c).__name__.removesuffix("Servicer")]
        for c in SERVICERS
    ]


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
