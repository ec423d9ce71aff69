"""The route table: every ``google.api.http`` rule of every RPC, compiled once at startup.

One ``Route`` per binding (the rule and each of its ``additional_bindings``). The
``Router`` indexes them by (HTTP method, segment count, verb) and, inside an index
entry, by specificity (a literal segment beats a variable, leftmost first), so a
request is matched by one dict lookup and a few segment comparisons; fully literal
routes (``GET /v1/me``) are a single dict lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from accounts.v1 import options_pb2
from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message_factory import GetMessageClass

from accounts_grpc.rest.templates import LITERAL, PathTemplate, parse_template, split_path
from accounts_grpc.rest.transcode import SCALAR_MESSAGES, QueryBinder, resolve

HTTP_METHODS = ("get", "put", "post", "delete", "patch")


class RouteError(ValueError):
    """An annotation the shim cannot serve (a bug in the proto, found at startup)."""


@dataclass(eq=False)
class Route:
    http_method: str  # "GET", "POST", ...
    template: PathTemplate
    body: str  # "" (none), "*" (whole message) or a top-level field name
    response_body: str  # "" (whole message) or a top-level field name
    service: ServiceDescriptor
    method: MethodDescriptor
    binding: int  # 0 for the rule itself, 1.. for additional_bindings
    request_class: Any
    path_chains: list[list[FieldDescriptor]]
    query: QueryBinder
    public: bool
    roles: tuple[str, ...]
    handler: Any = field(default=None)  # set by the gateway: request -> response

    @property
    def rpc(self) -> str:
        """``/accounts.v1.AccountService/GetAccount``, as the pipeline names calls."""
        return f"/{self.service.full_name}/{self.method.name}"

    @property
    def operation_id(self) -> str:
        """protoc-gen-openapiv2 style: ``AccountService_GetAccount``, then ``...2``, ``...3``."""
        base = f"{self.service.name}_{self.method.name}"
        return base if self.binding == 0 else f"{base}{self.binding + 1}"

    @property
    def path_fields(self) -> list[str]:
        return [".".join(f.name for f in chain) for chain in self.path_chains]

    def __repr__(self) -> str:
        return f"<Route {self.http_method} {self.template.source} → {self.rpc}>"


def _pattern(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise RouteError("an HttpRule without a pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return kind.upper(), getattr(rule, kind)


def compile_route(service: ServiceDescriptor, method: MethodDescriptor,
                  rule: http_pb2.HttpRule, binding: int) -> Route:
    verb, path = _pattern(rule)
    where = f"{method.full_name} ({verb} {path})"
    try:
        template = parse_template(path)
    except ValueError as e:
        raise RouteError(f"{where}: {e}") from None
    req = method.input_type
    chains: list[list[FieldDescriptor]] = []
    for var in template.variables:
        try:
            chain = resolve(req, var)
        except Exception as e:
            raise RouteError(f"{where}: path variable {'.'.join(var)!r}: {e}") from None
        leaf = chain[-1]
        if leaf.is_repeated or (leaf.message_type is not None
                                and leaf.message_type.full_name not in SCALAR_MESSAGES):
            raise RouteError(f"{where}: path variable {'.'.join(var)!r} is not a scalar field")
        chains.append(chain)
    body = rule.body
    if body not in ("", "*") and body not in req.fields_by_name:
        raise RouteError(f"{where}: body field {body!r} is not a field of {req.full_name}")
    if rule.response_body and rule.response_body not in method.output_type.fields_by_name:
        raise RouteError(f"{where}: response_body {rule.response_body!r} is not a field")
    path_fields = [".".join(f.name for f in c) for c in chains]
    binder = QueryBinder(req, path_fields, [body] if body not in ("", "*") else [],
                         closed=body == "*")
    opts = method.GetOptions()
    ext: Any = options_pb2.access
    access = opts.Extensions[ext] if opts.HasExtension(ext) else None
    return Route(
        http_method=verb,
        template=template,
        body=body,
        response_body=rule.response_body,
        service=service,
        method=method,
        binding=binding,
        request_class=GetMessageClass(req),
        path_chains=chains,
        query=binder,
        public=bool(access and access.public),
        roles=tuple(access.roles) if access else (),
    )


def routes_for(services: Iterable[ServiceDescriptor]) -> list[Route]:
    """Every binding of every RPC that has a ``google.api.http`` option, in proto order."""
    out: list[Route] = []
    for svc in services:
        for m in svc.methods:
            opts = m.GetOptions()
            if not opts.HasExtension(annotations_pb2.http):
                continue
            rule = opts.Extensions[annotations_pb2.http]
            out.append(compile_route(svc, m, rule, 0))
            for i, extra in enumerate(rule.additional_bindings, start=1):
                if extra.additional_bindings:
                    raise RouteError(f"{m.full_name}: nested additional_bindings")
                out.append(compile_route(svc, m, extra, i))
    return out


@dataclass
class Match:
    route: Route
    values: list[str]  # captured, still percent-encoded, one per template variable


class Router:
    """Method + raw path → the most specific route, or the methods that would match."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        seen: dict[tuple[object, ...], Route] = {}
        for r in self.routes:
            shape = tuple((s.kind, s.literal) for s in r.template.segments)
            key = (r.http_method, shape, r.template.verb)
            if key in seen:
                raise RouteError(f"{r!r} and {seen[key]!r} bind the same method and path")
            seen[key] = r
        self._literal: dict[tuple[str, str], Route] = {}
        self._fixed: dict[tuple[str, int, str], list[Route]] = {}
        self._rest: dict[str, list[Route]] = {}
        for r in sorted(self.routes, key=lambda r: r.template.specificity):
            t = r.template
            if not t.variables and all(s.kind == LITERAL for s in t.segments):
                self._literal[(r.http_method, t.source)] = r
            if t.has_rest:
                self._rest.setdefault(r.http_method, []).append(r)
            else:
                key2 = (r.http_method, len(t.segments), t.verb)
                self._fixed.setdefault(key2, []).append(r)
        self.methods = sorted({r.http_method for r in self.routes})

    def match(self, http_method: str, raw_path: str) -> Match | None:
        r = self._literal.get((http_method, raw_path))
        if r is not None:
            return Match(r, [])
        for parts, verb in split_path(raw_path):
            for r in self._fixed.get((http_method, len(parts), verb), ()):
                values = r.template.match(parts, verb)
                if values is not None:
                    return Match(r, values)
            for r in self._rest.get(http_method, ()):
                values = r.template.match(parts, verb)
                if values is not None:
                    return Match(r, values)
        return None

    def allowed(self, raw_path: str) -> list[str]:
        """The methods some route serves this path with (for 405 and ``Allow``)."""
        return [m for m in self.methods if self.match(m, raw_path) is not None]
