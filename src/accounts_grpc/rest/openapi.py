"""OpenAPI 3.1 for the REST shim, generated from the same annotations that route it.

Routes, parameters and bodies come from the compiled route table (``routes.py``), so
the document cannot drift from what the server serves; schemas come from the message
descriptors, descriptions from the proto comments.

The generated ``*_pb2`` modules carry no comments (protoc drops source info from
them), so the comments ship separately in ``descriptors.binpb`` next to this module: a
``FileDescriptorSet`` of the accounts.v1 files built by protoc with
``--include_source_info``, reduced to the locations that carry comments. This module only
reads it, at run time; the dev-time tool ``scripts/openapigen.py`` writes it and the
repository's ``openapi.json`` (``make gen``, ``make openapi``) and checks both are fresh
(``make check-gen``).

At runtime each file in it is checked against the descriptor the server actually uses
(source info aside); a stale file is ignored with a warning, so a stale comment can
never describe the wrong field.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from accounts_grpc.domain import roles as R
from accounts_grpc.rest.oauth import TOKEN_RPC
from accounts_grpc.rest.routes import Route, routes_for
from accounts_grpc.rest.transcode import (
    SCALAR_MESSAGES,
    STANDARD_JSON,
    WRAPPERS,
    emits_null,
    snake_case,
)
from accounts_grpc.rpc import registry  # imports every accounts.v1 module into the pool

log = logging.getLogger("accounts_grpc.rest")

PACKAGE = "accounts.v1"
DESCRIPTORS = Path(__file__).with_name("descriptors.binpb")
REF = "#/components/schemas/"
T = FieldDescriptor

_FB = field_behavior_pb2.FieldBehavior

# -- comments -----------------------------------------------------------------------------

# FileDescriptorProto / DescriptorProto / ... field numbers used in SourceCodeInfo paths.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM, _MSG_ONEOF = 2, 3, 4, 8
_ENUM_VALUE = 2
_SERVICE_METHOD = 2


def _element_names(fdp: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """SourceCodeInfo path → full name of the element it describes."""
    names: dict[tuple[int, ...], str] = {}
    pkg = fdp.package

    def enum(e: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...], scope: str) -> None:
        full = f"{scope}.{e.name}"
        names[path] = full
        for i, v in enumerate(e.value):
            # enum values are scoped like siblings of the enum in protobuf, but keep the
            # enum's name in the key so two enums cannot collide.
            names[(*path, _ENUM_VALUE, i)] = f"{full}.{v.name}"

    def message(m: descriptor_pb2.DescriptorProto, path: tuple[int, ...], scope: str) -> None:
        full = f"{scope}.{m.name}"
        names[path] = full
        for i, f in enumerate(m.field):
            names[(*path, _MSG_FIELD, i)] = f"{full}.{f.name}"
        for i, o in enumerate(m.oneof_decl):
            names[(*path, _MSG_ONEOF, i)] = f"{full}.{o.name}"
        for i, n in enumerate(m.nested_type):
            message(n, (*path, _MSG_NESTED, i), full)
        for i, e in enumerate(m.enum_type):
            enum(e, (*path, _MSG_ENUM, i), full)

    for i, m in enumerate(fdp.message_type):
        message(m, (_FILE_MESSAGE, i), pkg)
    for i, e in enumerate(fdp.enum_type):
        enum(e, (_FILE_ENUM, i), pkg)
    for i, s in enumerate(fdp.service):
        full = f"{pkg}.{s.name}"
        names[(_FILE_SERVICE, i)] = full
        for j, rpc in enumerate(s.method):
            names[(_FILE_SERVICE, i, _SERVICE_METHOD, j)] = f"{full}.{rpc.name}"
    return names


def clean_comment(text: str) -> str:
    """A proto comment block → text: one leading space per line dropped, ends trimmed."""
    lines = [line[1:] if line.startswith(" ") else line for line in text.split("\n")]
    return "\n".join(lines).strip()


def _default_json_name(name: str) -> str:
    """protoc's ToJsonName: drop underscores, capitalizing the letter after each."""
    out: list[str] = []
    upper = False
    for ch in name:
        if ch == "_":
            upper = True
        elif upper:
            out.append(ch.upper())
            upper = False
        else:
            out.append(ch)
    return "".join(out)


def _strip_default_json_names(fields: Iterable[descriptor_pb2.FieldDescriptorProto]) -> None:
    for f in fields:
        if f.HasField("json_name") and f.json_name == _default_json_name(f.name):
            f.ClearField("json_name")


def _normalize_messages(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for m in messages:
        _strip_default_json_names(m.field)
        _strip_default_json_names(m.extension)
        _normalize_messages(m.nested_type)


def strip_default_json_names(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    """Clear every json_name that is the default one, in place, as protoc's Python
    generator does for the descriptors it embeds."""
    _normalize_messages(fdp.message_type)
    _strip_default_json_names(fdp.extension)


def normalized(fdp: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    """The file as the generated *_pb2 module embeds it: no source info, and no json_name
    where it is the default (protoc's Python generator leaves those out)."""
    copy = descriptor_pb2.FileDescriptorProto()
    copy.CopyFrom(fdp)
    copy.ClearField("source_code_info")
    strip_default_json_names(copy)
    return copy


def _is_live(fdp: descriptor_pb2.FileDescriptorProto, pool: descriptor_pool.DescriptorPool
             ) -> bool:
    """Whether ``fdp`` is, comments aside, the file the server actually uses."""
    try:
        live = descriptor_pb2.FileDescriptorProto.FromString(
            pool.FindFileByName(fdp.name).serialized_pb)
    except KeyError:
        return False
    return normalized(live) == normalized(fdp)


@lru_cache(maxsize=1)
def comments() -> dict[str, str]:
    """Full element name → its leading (else trailing) comment, from descriptors.binpb."""
    out: dict[str, str] = {}
    try:
        fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes())
    except (OSError, ValueError) as e:
        log.warning("OpenAPI: no proto comments (%s: %s); run `make gen`", DESCRIPTORS.name, e)
        return out
    pool = descriptor_pool.Default()
    for fdp in fds.file:
        if not _is_live(fdp, pool):
            log.warning("OpenAPI: %s in %s is stale; its comments are left out. Run `make gen`",
                        fdp.name, DESCRIPTORS.name)
            continue
        names = _element_names(fdp)
        for loc in fdp.source_code_info.location:
            name = names.get(tuple(loc.path))
            text = loc.leading_comments or loc.trailing_comments
            if name and text:
                out[name] = clean_comment(text)
    return out


def stale_files() -> list[str]:
    """Files of descriptors.binpb that do not match the live descriptors (for tests)."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes())
    pool = descriptor_pool.Default()
    return [fdp.name for fdp in fds.file if not _is_live(fdp, pool)]


# -- schemas ------------------------------------------------------------------------------

_WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time",
                                  "description": "RFC 3339, e.g. \"2024-05-01T12:00:00Z\"."},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$",
                                 "description": "Seconds with an \"s\" suffix, e.g. \"1.5s\"."},
    "google.protobuf.FieldMask": {"type": "string",
                                  "description": "Comma-separated field paths, e.g. "
                                                 "\"name,primaryColor\"."},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {"$ref": REF + "Any"},
}


def _scalar(f: FieldDescriptor) -> dict[str, Any]:
    t = f.type
    if t in (T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32):
        return {"type": "integer", "format": "int32"}
    if t in (T.TYPE_UINT32, T.TYPE_FIXED32):
        return {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295}
    if t in (T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64):
        return {"type": ["string", "integer"], "format": "int64"}
    if t in (T.TYPE_UINT64, T.TYPE_FIXED64):
        return {"type": ["string", "integer"], "format": "uint64"}
    if t == T.TYPE_DOUBLE:
        return {"type": "number", "format": "double"}
    if t == T.TYPE_FLOAT:
        return {"type": "number", "format": "float"}
    if t == T.TYPE_BOOL:
        return {"type": "boolean"}
    if t == T.TYPE_BYTES:
        return {"type": "string", "format": "byte", "contentEncoding": "base64"}
    return {"type": "string"}


def _is_page_size(f: FieldDescriptor) -> bool:
    """The ``page_size`` of an AIP-158 list request (it has a ``page_token`` beside it)."""
    owner = f.containing_type
    return (f.name == "page_size" and f.type == T.TYPE_INT32 and owner is not None
            and "page_token" in owner.fields_by_name)


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or ``null``: a field with presence, which responses write as ``null``
    while it is unset (and which a request may send as ``null``, meaning unset)."""
    if "$ref" in schema:
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        return {"anyOf": [{"$ref": schema["$ref"]}, {"type": "null"}], **rest}
    t = schema.get("type")
    if isinstance(t, list):
        if "null" not in t:
            schema["type"] = [*t, "null"]
    elif t is not None:
        schema["type"] = [t, "null"]
    return schema  # no "type" (google.protobuf.Value): null is in already


def schema_name(full_name: str) -> str:
    prefix = PACKAGE + "."
    return full_name[len(prefix):] if full_name.startswith(prefix) else full_name


class SchemaBuilder:
    """Message and enum descriptors → JSON Schema (OpenAPI 3.1) components."""

    def __init__(self, notes: dict[str, str], output_only: Iterable[str] = ()) -> None:
        self.notes = notes
        #: messages only ever sent, never received: every field they write is required
        self.output_only = frozenset(output_only)
        self.schemas: dict[str, dict[str, Any]] = {}

    def type_schema(self, f: FieldDescriptor) -> dict[str, Any]:
        """The schema of one value of ``f`` (an element, for a repeated field)."""
        if f.message_type is not None:
            name = f.message_type.full_name
            if name in WRAPPERS:
                inner = _scalar(f.message_type.fields_by_name["value"])
                t = inner["type"]
                inner["type"] = [*t, "null"] if isinstance(t, list) else [t, "null"]
                return inner
            if name in _WKT:
                return dict(_WKT[name])
            return {"$ref": REF + self.add(f.message_type)}
        if f.enum_type is not None:
            return {"$ref": REF + self.add(f.enum_type)}
        return _scalar(f)

    def field_schema(self, f: FieldDescriptor) -> dict[str, Any]:
        mt = f.message_type
        if mt is not None and mt.GetOptions().map_entry:
            schema: dict[str, Any] = {"type": "object", "additionalProperties":
                                      self.type_schema(mt.fields_by_name["value"])}
        elif f.is_repeated:
            schema = {"type": "array", "items": self.type_schema(f)}
        else:
            schema = self.type_schema(f)
        if _is_page_size(f):
            schema["minimum"] = 0  # AIP-158: a negative page size is INVALID_ARGUMENT
        note = self.notes.get(f.full_name)
        behaviors = set(f.GetOptions().Extensions[field_behavior_pb2.field_behavior])
        if _FB.OUTPUT_ONLY in behaviors:
            schema["readOnly"] = True
        if _FB.INPUT_ONLY in behaviors:
            schema["writeOnly"] = True
        extra = []
        if _FB.IMMUTABLE in behaviors:
            extra.append("Immutable: set on create only.")
        oneof = f.containing_oneof
        if oneof is not None and len(oneof.fields) > 1:
            others = [o.json_name for o in oneof.fields if o is not f]
            extra.append(f"At most one of `{f.json_name}`, "
                         + ", ".join(f"`{o}`" for o in others) + " may be set.")
        text = " ".join([note, *extra]) if note else " ".join(extra)
        if text:
            schema["description"] = text if "description" not in schema else \
                f"{text} {schema['description']}"
        if f.GetOptions().deprecated:
            schema["deprecated"] = True
        return schema

    def add(self, d: Descriptor | EnumDescriptor) -> str:
        name = schema_name(d.full_name)
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder, breaks cycles
            self.schemas[name] = (self._enum(d) if isinstance(d, EnumDescriptor)
                                  else self.message_schema(d))
        return name

    def _enum(self, e: EnumDescriptor) -> dict[str, Any]:
        lines = [self.notes.get(e.full_name, "")]
        for v in e.values:
            note = self.notes.get(f"{e.full_name}.{v.name}")
            if note:
                lines.append(f"- `{v.name}`: {note}")
        schema: dict[str, Any] = {"type": "string", "enum": [v.name for v in e.values]}
        text = "\n".join(x for x in lines if x)
        if text:
            schema["description"] = text
        return schema

    def message_schema(self, m: Descriptor) -> dict[str, Any]:
        """A message's schema. Its JSON is grpc-gateway's (``transcode.message_json``):
        a field with presence may be ``null``; a message that only responses carry lists
        every field outside a oneof as required (all are always written). The messages a
        standard shapes (``STANDARD_JSON``) require the standard's members only."""
        standard = STANDARD_JSON.get(m.full_name)
        props: dict[str, Any] = {}
        required: list[str] = []
        for f in m.fields:
            field = self.field_schema(f)
            props[f.json_name] = nullable(field) if emits_null(f) and standard is None \
                else field
            if (_FB.REQUIRED in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
                    or (m.full_name in self.output_only and f.containing_oneof is None)
                    or (standard is not None and f.name in standard)):
                required.append(f.json_name)
        schema: dict[str, Any] = {"type": "object"}
        note = self.notes.get(m.full_name)
        if standard is not None:
            note = f"{note} {STANDARD_NOTE}".strip() if note else STANDARD_NOTE
        if note:
            schema["description"] = note
        schema["properties"] = props
        if required:
            schema["required"] = required
        return schema


# -- the document -------------------------------------------------------------------------

STATUS_SCHEMA = {
    "type": "object",
    "description": "An error, as grpc-gateway writes a google.rpc.Status: the gRPC code "
                   "number, a message for developers, and details such as "
                   "google.rpc.ErrorInfo (reason, domain \"accounts.v1\", metadata), "
                   "google.rpc.BadRequest (field violations) and google.rpc.RetryInfo.",
    "properties": {
        "code": {"type": "integer", "format": "int32",
                 "description": "gRPC status code, e.g. 5 for NOT_FOUND."},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"$ref": REF + "Any"}},
    },
    "required": ["code", "message", "details"],
}
ANY_SCHEMA = {
    "type": "object",
    "description": "A google.protobuf.Any: `@type` names the message, its fields follow.",
    "properties": {"@type": {"type": "string"}},
    "required": ["@type"],
    "additionalProperties": True,
}
OAUTH2_ERROR_SCHEMA = {
    "type": "object",
    "description": "An RFC 6749 section 5.2 error (RFC 7009 adds unsupported_token_type).",
    "properties": {
        "error": {"type": "string", "enum": [
            "invalid_request", "invalid_client", "unsupported_grant_type",
            "unauthorized_client", "invalid_scope", "unsupported_token_type",
            "temporarily_unavailable", "server_error"]},
        "error_description": {"type": "string"},
    },
    "required": ["error"],
}
READINESS_SCHEMA = {
    "type": "object",
    "description": "What `/readyz` answers: ready, or why not (`draining`, `database "
                   "unreachable`).",
    "properties": {"ready": {"type": "boolean"}, "reason": {"type": "string"}},
    "required": ["ready"],
}
METADATA_SCHEMA = {
    "type": "object",
    "description": "RFC 8414 authorization server metadata, also the OpenID Provider "
                   "metadata; issuer equals the iss of the tokens this server signs.",
    "required": ["issuer", "token_endpoint", "jwks_uri"],
    "additionalProperties": True,
    "properties": {k: {"type": "string"} for k in (
        "issuer", "token_endpoint", "jwks_uri", "introspection_endpoint",
        "revocation_endpoint")},
}
TOKEN_FORM_SCHEMA = {
    "type": "object",
    "description": "An RFC 7662 introspection or RFC 7009 revocation request.",
    "required": ["token"],
    "properties": {k: {"type": "string"} for k in (
        "token", "token_type_hint", "client_id", "client_secret")},
}
INTROSPECTION_SCHEMA = {
    "type": "object",
    "description": "An RFC 7662 introspection response: `active`, and for an active "
                   "token its members.",
    "required": ["active"],
    "additionalProperties": True,
    "properties": {"active": {"type": "boolean"}},
}
STANDARD_NOTE = ("Shaped by its standard, not by proto3 JSON: a member at its default is "
                 "left out, except the required ones.")

# -- error responses ----------------------------------------------------------------------

RESPONSES = "#/components/responses/"


def _header(description: str, *, required: bool, integer: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "minimum": 1} if integer else {"type": "string"}
    return {"description": description, "required": required, "schema": schema}


def _error(schema: str, description: str, headers: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """A components/responses entry: an error whose body is the schema ``schema``."""
    out: dict[str, Any] = {"description": description}
    if headers:
        out["headers"] = headers
    out["content"] = {"application/json": {"schema": {"$ref": REF + schema}}}
    return out


_RETRY_AFTER = "Seconds to wait before trying again."
_MAYBE_RETRY_AFTER = {"Retry-After": _header(
    _RETRY_AFTER + " Sent with OVERLOADED (every worker busy).", required=False, integer=True)}

#: The error responses of the transcoded RPCs, by HTTP status: a google.rpc.Status as
#: grpc-gateway writes it (rest/errors.py), the status from grpc-gateway's table.
#: FAILED_PRECONDITION is 400 there, so no RPC answers 412.
RPC_ERRORS: dict[str, tuple[str, dict[str, Any]]] = {
    "400": ("BadRequest", _error(
        "Status", "INVALID_ARGUMENT (a google.rpc.BadRequest names each bad field: in the "
        "path, the query or the body), FAILED_PRECONDITION (the resource's state forbids "
        "the call, e.g. ACCOUNT_CLOSED) or OUT_OF_RANGE.")),
    "401": ("Unauthenticated", _error(
        "Status", "UNAUTHENTICATED: no bearer token, or one that is malformed, expired or "
        "revoked.", {"WWW-Authenticate": _header(
            "The challenge, `Bearer realm=\"accounts-grpc\"`.", required=True)})),
    "403": ("PermissionDenied", _error(
        "Status", "PERMISSION_DENIED: the RPC needs a role the caller lacks "
        "(ROLE_REQUIRED), or the caller may see the resource but not do this to it.")),
    "404": ("NotFound", _error(
        "Status", "NOT_FOUND (reason `<KIND>_NOT_FOUND`): no such resource, or one the "
        "caller may not see.")),
    "408": ("RequestTimeout", _error(
        "Status", "DEADLINE_EXCEEDED (REQUEST_BODY_TIMEOUT): the body did not arrive within "
        "the server's `--http-body-timeout`; the connection is closed.")),
    "409": ("Conflict", _error(
        "Status", "ALREADY_EXISTS (a name, email or id that must be unique is taken) or "
        "ABORTED (ETAG_MISMATCH, or a concurrent change): read again and retry.")),
    "413": ("ContentTooLarge", _error(
        "Status", "RESOURCE_EXHAUSTED (REQUEST_TOO_LARGE): the body is larger than the "
        "server's `--http-max-body-bytes` (1 MiB by default).")),
    "431": ("HeaderFieldsTooLarge", _error(
        "Status", "RESOURCE_EXHAUSTED (REQUEST_HEADERS_TOO_LARGE): the request head is "
        "larger than `--http-max-header-bytes` or has more than `--http-max-headers` "
        "fields; the connection is closed. Any request may get it.")),
    "503": ("Unavailable", _error(
        "Status", "UNAVAILABLE (the database is down or busy, or the server is shutting "
        "down) or RESOURCE_EXHAUSTED (OVERLOADED: every worker is busy): retry, later or "
        "elsewhere.", _MAYBE_RETRY_AFTER)),
    "default": ("Error", _error(
        "Status", "Any other error, its HTTP status from its gRPC code (grpc-gateway's "
        "table), e.g. INTERNAL 500; and the HTTP server's refusal of a request head it "
        "cannot parse or that arrives too late, before any route is chosen.")),
}
#: The error responses of the OAuth 2 endpoints (rest/oauth.py, rest/oauth_endpoints.py):
#: RFC 6749 section 5.2 error objects, never a Status.
OAUTH2_ERRORS: dict[str, tuple[str, dict[str, Any]]] = {
    "400": ("OAuth2InvalidRequest", _error(
        "OAuth2Error", "invalid_request (a malformed, incomplete or repeated parameter), "
        "unsupported_grant_type, invalid_scope; at introspection and revocation also "
        "unsupported_token_type (a JWT cannot be revoked alone) and unauthorized_client "
        "(a token the client may not revoke).")),
    "401": ("OAuth2InvalidClient", _error(
        "OAuth2Error", "invalid_client: no client authentication, or a wrong client id or "
        "secret.", {"WWW-Authenticate": _header(
            "The challenge, `Basic realm=\"accounts-grpc\"`.", required=True)})),
    "408": ("OAuth2RequestTimeout", _error(
        "OAuth2Error", "invalid_request: the body did not arrive within the server's "
        "`--http-body-timeout`.")),
    "413": ("OAuth2ContentTooLarge", _error(
        "OAuth2Error", "invalid_request: the body is larger than the server's "
        "`--http-max-body-bytes`.")),
    "429": ("OAuth2TooManyAttempts", _error(
        "OAuth2Error", "temporarily_unavailable: too many failed attempts for this client "
        "or from this address.", {"Retry-After": _header(
            _RETRY_AFTER, required=True, integer=True)})),
    "503": ("OAuth2Unavailable", _error(
        "OAuth2Error", "temporarily_unavailable: the database is down or busy, or every "
        "worker is busy.", _MAYBE_RETRY_AFTER)),
    "default": ("OAuth2ServerError", _error(
        "OAuth2Error", "server_error (or temporarily_unavailable), its HTTP status from "
        "the gRPC code of the failure.")),
}


def error_responses(table: dict[str, tuple[str, dict[str, Any]]], statuses: Iterable[str]
                    ) -> dict[str, Any]:
    """References to the responses for ``statuses`` and ``default``: ``table``'s, else
    the RPCs' (the HTTP server's own refusal of a head, 431, is a Status on any path)."""
    return {s: {"$ref": RESPONSES + (table[s] if s in table else RPC_ERRORS[s])[0]}
            for s in (*sorted(set(statuses)), "default")}


DESCRIPTION = """\
The REST shim of accounts-grpc, transcoded from the gRPC API (package `accounts.v1`)
like grpc-gateway: the same RPCs, authorization and errors as over gRPC.

- Authenticate with `Authorization: Bearer <token>`: a JWT from `POST /v1/token`
  (OAuth2 client credentials, RFC 6749 section 4.4) or a session token from
  `POST /v1/sessions`.
- Bodies and responses are proto3 JSON as grpc-gateway v2 writes it: lowerCamelCase
  out, either spelling in (an unknown field is 400); 64-bit integers are strings.
- A response carries every field of its message, at its default too (`false`, `0`,
  `""`, `[]`, `{}`, an enum's `*_UNSPECIFIED`): `"closed": false` is an account that is
  not closed, never a field left out. A message field that is not set (a timestamp not
  reached yet, say) is `null`; only an unset member of a oneof is left out. The schemas
  of messages that only responses carry mark these fields `required`; error details
  follow the same rule. A request may leave any field out.
- Where a standard defines the JSON, the standard wins and members at their default are
  left out: the JWK Set (`/.well-known/jwks.json`, RFC 7517: `keys` always; a key member
  that does not apply to its key type is absent), the token response (`POST /v1/token`,
  RFC 6749 section 5.1) and token introspection (`POST /v1/token:introspect`, RFC 7662:
  `active` always; nothing else for an inactive token).
- Fields not in the path or the body come from the query string: dotted names for
  nested fields, a repeated key for a list, field masks comma-separated, enums by name,
  timestamps in RFC 3339.
- Errors are `{"code", "message", "details"}` with the HTTP status from grpc-gateway's
  table (INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404,
  ALREADY_EXISTS/ABORTED 409, RESOURCE_EXHAUSTED 429 with `Retry-After`,
  UNIMPLEMENTED 501, UNAVAILABLE 503). A known path with the wrong method is 405 with
  `Allow`; a request body over the server's limit (`--http-max-body-bytes`, 1 MiB by
  default) is 413. Each operation lists the error statuses it can answer, and `default`
  the rest; FAILED_PRECONDITION is 400 (grpc-gateway's table), so nothing answers 412.
  The OAuth 2 endpoints answer RFC 6749 error objects instead.
"""


def _first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    m = re.match(r"(.+?\.)(\s|$)", flat)
    return (m.group(1) if m else flat)[:200]


def _is_update(req: Descriptor, body: FieldDescriptor) -> bool:
    """An AIP-134 update: the body is a resource and the request has a field mask."""
    mask = req.fields_by_name.get("update_mask")
    return (body.message_type is not None and mask is not None
            and mask.message_type is not None
            and mask.message_type.full_name == "google.protobuf.FieldMask")


def _name_key(name: str) -> str:
    """A parameter name as client generators fold it: ``user.accountId`` → ``user_account_id``."""
    return snake_case(name).replace(".", "_")


def flat_param_names(field_paths: Sequence[str], taken: Iterable[str] = ()) -> list[str]:
    """OpenAPI names for a template's path variables: no dots, since OpenAPI tools reject
    or skip dotted path parameters (schemathesis, openapi-python-client).

    A variable is named by the last part of its field path (``user.user_id`` →
    ``user_id``), or by the whole path with underscores (``user_user_id``) where the last
    part would collide with another parameter of the operation: another path variable or
    one of ``taken`` (the query parameter names), compared the way client generators fold
    names (``accountId`` and ``account_id`` collide). Only the document uses these names;
    each parameter's description names the request field it fills.
    """
    used = {_name_key(t) for t in taken}
    shorts = [p.rsplit(".", 1)[-1] for p in field_paths]
    short_keys = [_name_key(s) for s in shorts]
    names: list[str | None] = [
        s if short_keys.count(k) == 1 and k not in used else None
        for s, k in zip(shorts, short_keys, strict=True)]
    used |= {_name_key(n) for n in names if n is not None}
    for i, path in enumerate(field_paths):
        if names[i] is None:
            base = candidate = path.replace(".", "_")
            n = 2
            while _name_key(candidate) in used:
                candidate, n = f"{base}_{n}", n + 1
            names[i] = candidate
            used.add(_name_key(candidate))
    return [n for n in names if n is not None]


def _canonical(route: Route) -> tuple[Any, ...]:
    t = route.template
    shape: list[Any] = []
    last_var = -2
    for s in t.segments:
        if s.var >= 0:
            if s.var != last_var:
                shape.append(("var", t.var_patterns[s.var]))
            last_var = s.var
        else:
            shape.append((s.kind, s.literal))
            last_var = -2
    return (tuple(shape), t.verb)


def _reachable(roots: Iterable[Descriptor], stop: Iterable[str] = ()) -> set[str]:
    """Full names of the messages in ``roots`` and in their fields, at any depth; a
    message named in ``stop`` is left out, and not walked into."""
    stop = frozenset(stop)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        m = todo.pop()
        if m.full_name in seen or m.full_name in stop:
            continue
        seen.add(m.full_name)
        todo.extend(f.message_type for f in m.fields if f.message_type is not None)
    return seen


USER_REF = PACKAGE + ".UserRef"
#: What a route's shape does not tell about its RPC's errors (services/ decide them):
#: a read that may be PERMISSION_DENIED (another user's sessions: USER_SELF, whose denial
#: does not hide the user), a POST that writes nothing, and a write without an etag or a
#: unique key to conflict on.
DENIED_READS = frozenset({"/accounts.v1.SessionService/ListSessions"})
READ_ONLY_POSTS = frozenset({"/accounts.v1.SessionService/IntrospectToken"})
NO_CONFLICT = frozenset({"/accounts.v1.SessionService/RevokeSession"})


def _names_resource(route: Route) -> bool:
    """Whether the request names a resource (NOT_FOUND when it is missing or hidden): a
    path variable, or a field that refers to a user."""
    return bool(route.path_chains) or any(
        f.message_type is not None and f.message_type.full_name == USER_REF
        for f in route.method.input_type.fields)


class DocumentBuilder:
    def __init__(self, routes: Sequence[Route], notes: dict[str, str]) -> None:
        self.routes = routes
        self.notes = notes
        #: RPCs with a route that names a resource: the other routes of the RPC find it
        #: by a query parameter (GET /v1/accounts:lookup?email=...)
        self.finds = {r.rpc for r in routes if _names_resource(r)}
        sent = _reachable((r.method.output_type for r in routes), stop=STANDARD_JSON)
        received = _reachable(r.method.input_type for r in routes)
        self.schemas = SchemaBuilder(notes, output_only=sent - received)

    def build(self) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        # Routes of one path shape share one OpenAPI path, so one set of parameter names.
        groups: dict[tuple[Any, ...], list[Route]] = {}
        for route in self.routes:
            groups.setdefault(_canonical(route), []).append(route)
        canonical: dict[tuple[Any, ...], tuple[str, list[str]]] = {}
        for key, group in groups.items():
            first = group[0].template
            taken = {p["name"] for r in group for p in self._route_query_params(r)}
            names = flat_param_names(first.field_paths, taken)
            canonical[key] = (first.openapi_path(names), names)
        for route in self.routes:
            path, names = canonical[_canonical(route)]
            item = paths.setdefault(path, {})
            item[route.http_method.lower()] = self.operation(route, names)
        paths.update(self.ops_paths())
        self.schemas.schemas.setdefault("Status", STATUS_SCHEMA)
        self.schemas.schemas.setdefault("Any", ANY_SCHEMA)
        self.schemas.schemas.setdefault("OAuth2Error", OAUTH2_ERROR_SCHEMA)
        services = []
        seen: set[str] = set()
        for r in self.routes:
            if r.service.full_name not in seen:
                seen.add(r.service.full_name)
                tag: dict[str, Any] = {"name": r.service.name}
                if self.notes.get(r.service.full_name):
                    tag["description"] = self.notes[r.service.full_name]
                services.append(tag)
        services.append({"name": "Operations",
                         "description": "Health, readiness, metrics and this document."})
        services.append({"name": "OAuth2",
                         "description": "Authorization server metadata, introspection and "
                                        "revocation, as their RFCs shape them."})
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "accounts-grpc",
                "version": "v1",
                "description": DESCRIPTION,
                "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
            },
            "servers": [{"url": "/"}],
            "tags": services,
            # either scheme: the OAuth 2 one says where a client gets its bearer token
            "security": [{"bearer": []}, {"oauth2": []}],
            "paths": paths,
            "components": {
                "schemas": dict(sorted(self.schemas.schemas.items())),
                "responses": dict(sorted(
                    entry for table in (RPC_ERRORS, OAUTH2_ERRORS) for entry in table.values())),
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "description": "A JWT from POST /v1/token or a session token from "
                                       "POST /v1/sessions.",
                    },
                    "oauth2": {
                        "type": "oauth2",
                        "description": "OAuth2 client credentials (RFC 6749 section 4.4); "
                                       "the token goes in `Authorization: Bearer`.",
                        "flows": {"clientCredentials": {"tokenUrl": "/v1/token", "scopes": {}}},
                    },
                },
            },
        }

    def _param_desc(self, f: FieldDescriptor) -> str:
        return self.notes.get(f.full_name, "")

    def _query_params(self, desc: Descriptor, skip: set[str], prefix: str = "",
                      proto_prefix: str = "", depth: int = 0,
                      stack: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for f in desc.fields:
            proto = proto_prefix + f.name
            if proto in skip:
                continue
            mt = f.message_type
            if mt is not None and mt.GetOptions().map_entry:
                continue
            if mt is not None and mt.full_name not in SCALAR_MESSAGES:
                if f.is_repeated or depth >= 3 or mt.full_name in stack:
                    continue
                out += self._query_params(mt, skip, f"{prefix}{f.json_name}.", proto + ".",
                                          depth + 1, (*stack, mt.full_name))
                continue
            schema = self.schemas.field_schema(f)
            param: dict[str, Any] = {"name": prefix + f.json_name, "in": "query",
                                     "required": False}
            description = schema.pop("description", "")
            schema.pop("readOnly", None)
            if description:
                param["description"] = description
            if f.is_repeated:
                param["style"] = "form"
                param["explode"] = True
            param["schema"] = schema
            out.append(param)
        return out

    def _route_query_params(self, route: Route) -> list[dict[str, Any]]:
        """The query parameters of a route: every field not in its path or body."""
        if route.body == "*":
            return []
        skip = set(route.path_fields)
        if route.body:
            skip.add(route.body)
        return self._query_params(route.method.input_type, skip)

    def operation(self, route: Route, names: list[str]) -> dict[str, Any]:
        m = route.method
        note = self.notes.get(m.full_name, "")
        op: dict[str, Any] = {"operationId": route.operation_id, "tags": [route.service.name]}
        if note:
            op["summary"] = _first_sentence(note)
            op["description"] = note
        params: list[dict[str, Any]] = []
        for i, chain in enumerate(route.path_chains):
            leaf = chain[-1]
            schema = self.schemas.type_schema(leaf)
            desc = self._param_desc(leaf)
            field_path = route.path_fields[i]
            if names[i] != field_path:
                desc = f"Fills the request field `{field_path}`. {desc}".strip()
            pattern = route.template.var_patterns[i]
            if pattern != "*":
                desc = f"{desc} Matches `{pattern}`.".strip()
            p: dict[str, Any] = {"name": names[i], "in": "path", "required": True,
                                 "schema": schema}
            if desc:
                p["description"] = desc
            params.append(p)
        params += self._route_query_params(route)
        if params:
            op["parameters"] = params
        if route.body:
            op["requestBody"] = self.request_body(route)
        op["responses"] = self.responses(route)
        if route.public:
            op["security"] = []
        return op

    def request_body(self, route: Route) -> dict[str, Any]:
        req = route.method.input_type
        if route.body == "*":
            top = {c[0].name for c in route.path_chains if len(c) == 1}
            if top:  # the message without its path fields, inline (no component)
                full = self.schemas.message_schema(req)
                schema = {k: v for k, v in full.items() if k not in ("properties", "required")}
                excluded = {req.fields_by_name[t].json_name for t in top}
                schema["properties"] = {n: s for n, s in full["properties"].items()
                                        if n not in excluded}
                req_fields = [n for n in full.get("required", ()) if n in schema["properties"]]
                if req_fields:
                    schema["required"] = req_fields
            else:
                schema = {"$ref": REF + self.schemas.add(req)}
            required = False
        else:
            f = req.fields_by_name[route.body]
            schema = self.schemas.field_schema(f)
            schema.pop("readOnly", None)
            required = _FB.REQUIRED in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
            if _is_update(req, f):
                schema = self._partial(f, schema)
        content: dict[str, Any] = {"application/json": {"schema": schema}}
        if route.rpc == "/accounts.v1.SessionService/CreateToken":
            content["application/x-www-form-urlencoded"] = {"schema": {
                "type": "object",
                "properties": {f.name: _scalar(f) for f in req.fields},
                "required": ["grant_type"],
            }}
        return {"required": required, "content": content}

    def _partial(self, f: FieldDescriptor, schema: dict[str, Any]) -> dict[str, Any]:
        """The body of an AIP-134 update: the resource, none of its fields required (the
        update mask, or else the fields present, says what is written)."""
        assert f.message_type is not None
        full = self.schemas.schemas[self.schemas.add(f.message_type)]
        partial = {k: v for k, v in full.items() if k not in ("required", "description")}
        note = "A partial resource: only the fields named in `updateMask` are written (with " \
               "no mask, every field present)."
        description = schema.get("description") or full.get("description", "")
        partial["description"] = f"{description} {note}".strip()
        return partial

    def responses(self, route: Route) -> dict[str, Any]:
        out_desc = route.method.output_type
        if route.response_body:
            schema = self.schemas.field_schema(out_desc.fields_by_name[route.response_body])
        else:
            schema = {"$ref": REF + self.schemas.add(out_desc)}
        ok = {"description": self.notes.get(out_desc.full_name, "OK") or "OK",
              "content": {"application/json": {"schema": schema}}}
        if route.method.server_streaming:  # grpc-gateway's stream: one object a line
            ok["content"] = {"application/x-ndjson": {"schema": {
                "type": "object",
                "title": f"Stream result of {out_desc.full_name}",
                "description": "One line of the newline-delimited JSON stream: `result` "
                               "holds the next message; `error`, on the last line, the "
                               "failure that ended the stream.",
                "properties": {"result": schema, "error": {"$ref": REF + "Status"}},
            }}}
        if route.rpc == TOKEN_RPC:  # RFC 6749's errors (rest/oauth.py); no body timeout
            return {"200": ok, **error_responses(
                OAUTH2_ERRORS, ("400", "401", "413", "429", "431", "503"))}
        return {"200": ok, **error_responses(RPC_ERRORS, self.rpc_error_statuses(route))}

    def rpc_error_statuses(self, route: Route) -> set[str]:
        """The error statuses a transcoded RPC's route can answer: any request may be
        malformed (400; an unknown query parameter too), its head too large (431), the
        server busy or the database down (503); then by what the route does: a secured
        one authenticates (401) and may need a role (403); a write may be denied on the
        resource (403) and conflict (409); a body may be late (408) or too large (413);
        a named resource may be missing (404). No route answers 429: only client
        authentication is rate limited (the OAuth 2 endpoints)."""
        rpc = route.rpc
        writes = route.http_method != "GET" and rpc not in READ_ONLY_POSTS
        statuses = {"400", "431", "503"}
        if not route.public:
            statuses.add("401")
            if writes or set(route.roles) - {R.MEMBER} or rpc in DENIED_READS:
                statuses.add("403")
        if rpc in self.finds:
            statuses.add("404")
        if writes and rpc not in NO_CONFLICT:
            statuses.add("409")
        if route.body:
            statuses |= {"408", "413"}
        return statuses

    def ops_paths(self) -> dict[str, Any]:
        """The operations endpoints (rest/gateway.py): they answer 200, or refuse the head
        as any request (431); ``/readyz`` is 503 with its own body when not ready."""
        self.schemas.schemas.setdefault("Readiness", READINESS_SCHEMA)
        ready = {"application/json": {"schema": {"$ref": REF + "Readiness"}}}

        def op(op_id: str, summary: str, content: dict[str, Any],
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
            responses = {"200": {"description": "OK", "content": content}, **(extra or {}),
                         **error_responses(RPC_ERRORS, ("431",))}
            return {"get": {"operationId": op_id, "summary": summary, "tags": ["Operations"],
                            "security": [], "responses": dict(sorted(responses.items()))}}

        text = {"text/plain": {"schema": {"type": "string"}}}
        return {
            "/healthz": op("Operations_Healthz", "The process is up.", text),
            "/readyz": op("Operations_Readyz",
                          "Ready for traffic: the database answers and the server is not "
                          "draining.", ready,
                          {"503": {"description": "Not ready (draining or database down).",
                                   "content": ready}}),
            "/metrics": op("Operations_Metrics",
                           "Prometheus metrics (text format 0.0.4): calls, latencies and "
                           "errors per RPC, code and transport.", text),
            "/openapi.json": op("Operations_OpenApi", "This document.",
                                {"application/json": {"schema": {"type": "object"}}}),
            **self.oauth_paths(),
        }

    def oauth_paths(self) -> dict[str, Any]:
        """The OAuth 2 endpoints that are no RPC (rest/oauth_endpoints.py): discovery
        metadata (RFC 8414, OpenID Connect Discovery), introspection (RFC 7662) and
        revocation (RFC 7009). Their JSON is the RFCs', not proto3 JSON; so are the
        errors of introspection and revocation. The metadata, read through the call
        pipeline, fails as the RPCs do (a Status)."""
        schemas = self.schemas.schemas
        for name, schema in (("OAuth2Error", OAUTH2_ERROR_SCHEMA),
                             ("AuthorizationServerMetadata", METADATA_SCHEMA),
                             ("OAuth2TokenRequest", TOKEN_FORM_SCHEMA),
                             ("TokenIntrospection", INTROSPECTION_SCHEMA)):
            schemas.setdefault(name, schema)
        metadata = {"application/json": {"schema": {"$ref": REF + "AuthorizationServerMetadata"}}}

        def discovery(op_id: str, summary: str) -> dict[str, Any]:
            return {"get": {"operationId": op_id, "summary": summary, "tags": ["OAuth2"],
                            "security": [], "responses": {
                                "200": {"description": "OK", "content": metadata},
                                **error_responses(RPC_ERRORS, ("431", "503"))}}}

        def form_post(op_id: str, summary: str, ok: dict[str, Any]) -> dict[str, Any]:
            return {"post": {
                "operationId": op_id, "summary": summary, "tags": ["OAuth2"],
                "description": "Client authentication: HTTP Basic (client_secret_basic) or "
                               "client_id and client_secret in the form "
                               "(client_secret_post); failures count on the same limit as "
                               "the token endpoint.",
                "security": [],
                "requestBody": {"required": True, "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {"$ref": REF + "OAuth2TokenRequest"}}}},
                "responses": {"200": ok, **error_responses(
                    OAUTH2_ERRORS, ("400", "401", "408", "413", "429", "431", "503"))}}}

        return {
            "/.well-known/oauth-authorization-server": discovery(
                "OAuth2_Metadata", "Authorization server metadata (RFC 8414)."),
            "/.well-known/openid-configuration": discovery(
                "OAuth2_OpenIdConfiguration", "OpenID Connect Discovery metadata (the same "
                "document; no interactive flow exists)."),
            "/oauth2/introspect": form_post(
                "OAuth2_Introspect", "Token introspection (RFC 7662).",
                {"description": "The token's state: {\"active\": false} for anything "
                                "unknown, expired, revoked or out of the caller's reach.",
                 "content": {"application/json": {
                     "schema": {"$ref": REF + "TokenIntrospection"}}}}),
            "/oauth2/revoke": form_post(
                "OAuth2_Revoke", "Token revocation (RFC 7009): session tokens; a JWT is "
                "unsupported_token_type (rotate the client secret to revoke a client's "
                "JWTs).",
                {"description": "Revoked, or already invalid (RFC 7009 section 2.2)."}),
        }


def document(routes: Sequence[Route] | None = None) -> dict[str, Any]:
    """The OpenAPI document as a dict."""
    if routes is None:
        routes = routes_for(registry.service_descriptors())
    return DocumentBuilder(routes, comments()).build()


def render(routes: Sequence[Route] | None = None) -> str:
    """The OpenAPI document as the text ``make openapi`` writes (stable, diff-friendly)."""
    return json.dumps(document(routes), indent=2, ensure_ascii=False) + "\n"
