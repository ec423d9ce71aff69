"""HTTP request parts → a request message, and a response message → its JSON.

grpc-gateway's rules, driven by the message descriptors:

- path variables (``{id}``, ``{account.id}``) and query parameters are strings,
  converted by the field's type: integers, bools (``true``/``false``/``1``/``0``...),
  enums by name (or number), ``Timestamp`` as RFC 3339, ``Duration`` as ``"1.5s"``,
  ``FieldMask`` as comma-separated paths (either spelling), wrappers by their value;
- query names are dotted field paths in either spelling (``update_mask`` or
  ``updateMask``, ``user.user_id`` or ``user.userId``); a repeated field takes the key
  repeated; an unknown name, or one the path or the body already sets, is
  INVALID_ARGUMENT with a field violation;
- JSON bodies are proto3 JSON (``json_format``), both spellings in, unknown fields
  INVALID_ARGUMENT with the offending field named; and what protojson would take but the
  OpenAPI document forbids is refused, not read as unset: an output-only field named at
  any depth, whatever its value (the document's ``readOnly``), and ``null`` for a field
  whose schema is not nullable (``accepts_null``);
- responses (and error details) are written as grpc-gateway v2's default marshaler
  writes them: lowerCamelCase names and every field present, at its default if need be
  (``false``, ``0``, ``""``, ``[]``, ``{}``; ``null`` for an unset message field), save
  the few messages a standard shapes (JWKS, OAuth 2 token and introspection responses).

No I/O here: the gateway hands in bytes and strings, and gets messages or
``InvalidArgument`` back; it hands in response messages and gets JSON values back.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from accounts_grpc.domain.errors import FieldViolation, InvalidArgument

T = FieldDescriptor

_INT32 = (T.TYPE_INT32, T.TYPE_SINT32, T.TYPE_SFIXED32)
_INT64 = (T.TYPE_INT64, T.TYPE_SINT64, T.TYPE_SFIXED64)
_UINT32 = (T.TYPE_UINT32, T.TYPE_FIXED32)
_UINT64 = (T.TYPE_UINT64, T.TYPE_FIXED64)
_BOUNDS: dict[int, tuple[int, int]] = {
    **{t: (-(2**31), 2**31 - 1) for t in _INT32},
    **{t: (-(2**63), 2**63 - 1) for t in _INT64},
    **{t: (0, 2**32 - 1) for t in _UINT32},
    **{t: (0, 2**64 - 1) for t in _UINT64},
}
# strconv.ParseBool, as grpc-gateway uses.
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})

WRAPPERS = frozenset(
    f"google.protobuf.{n}Value"
    for n in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
# Well-known message types that a single string can carry (query and path values).
SCALAR_MESSAGES = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
) | WRAPPERS

_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def snake_case(name: str) -> str:
    """``primaryColor`` → ``primary_color`` (already snake_case stays as it is)."""
    return _CAMEL.sub(r"_\1", name).lower() if any(c.isupper() for c in name) else name


class Problem(Exception):
    """One bad input value; becomes a FieldViolation of ``field``."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


def invalid(problems: list[Problem], *, reason: str, what: str) -> InvalidArgument:
    """INVALID_ARGUMENT with one field violation per problem; the message repeats them."""
    text = "; ".join(f"{p.field}: {p.description}" if p.field else p.description for p in problems)
    return InvalidArgument(
        f"{what}: {text}",
        [FieldViolation(p.field, p.description) for p in problems],
        reason=reason,
    )


# -- field lookup -----------------------------------------------------------------------


def field_by_any_name(desc: Descriptor, name: str) -> FieldDescriptor | None:
    """A field by its proto name or its JSON name."""
    f = desc.fields_by_name.get(name)
    if f is not None:
        return f
    return desc.fields_by_camelcase_name.get(name) or _json_names(desc).get(name)


_JSON_NAME_CACHE: dict[str, dict[str, FieldDescriptor]] = {}


def _json_names(desc: Descriptor) -> dict[str, FieldDescriptor]:
    names = _JSON_NAME_CACHE.get(desc.full_name)
    if names is None:
        names = {f.json_name: f for f in desc.fields}
        _JSON_NAME_CACHE[desc.full_name] = names
    return names


def resolve(desc: Descriptor, dotted: Iterable[str]) -> list[FieldDescriptor]:
    """A dotted field path (either spelling per part) → its chain of field descriptors.

    Raises Problem naming the part that is unknown or that cannot be descended into.
    """
    chain: list[FieldDescriptor] = []
    current: Descriptor | None = desc
    seen: list[str] = []
    for part in dotted:
        if current is None:
            raise Problem(".".join(seen), "is not a message; it has no field " + repr(part))
        f = field_by_any_name(current, part)
        if f is None:
            raise Problem(".".join([*seen, part]), "unknown field")
        chain.append(f)
        seen.append(f.name)
        mt = f.message_type
        current = mt if (mt is not None and not f.is_repeated
                         and mt.full_name not in SCALAR_MESSAGES) else None
    return chain


# -- scalar conversion ------------------------------------------------------------------


def convert_scalar(f: FieldDescriptor, value: str) -> Any:
    """A string from the path or the query → the Python value for field ``f``.

    Raises ValueError with a description for the client.
    """
    t = f.type
    if t == T.TYPE_STRING:
        return value
    if t in _BOUNDS:
        try:
            n = int(value, 10)
        except ValueError:
            raise ValueError(f"{value!r} is not an integer") from None
        lo, hi = _BOUNDS[t]
        if not lo <= n <= hi:
            raise ValueError(f"{value} is out of range [{lo}, {hi}]")
        return n
    if t == T.TYPE_BOOL:
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ValueError(f"{value!r} is not a boolean (true or false)")
    if t in (T.TYPE_DOUBLE, T.TYPE_FLOAT):
        try:
            x = float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if t == T.TYPE_FLOAT and math.isfinite(x) and abs(x) > 3.4028234663852886e38:
            raise ValueError(f"{value} is out of range for a float")
        return x
    if t == T.TYPE_ENUM:
        enum = f.enum_type
        assert enum is not None
        ev = enum.values_by_name.get(value)
        if ev is not None:
            return ev.number
        if value.lstrip("-").isdigit() and int(value) in enum.values_by_number:
            return int(value)
        names = ", ".join(v.name for v in enum.values)
        raise ValueError(f"{value!r} is not one of {names}")
    if t == T.TYPE_BYTES:
        padded = value + "=" * (-len(value) % 4)
        try:
            if "-" in value or "_" in value:
                return base64.urlsafe_b64decode(padded)
            return base64.b64decode(padded, validate=True)
        except ValueError:
            raise ValueError("is not base64") from None
    raise ValueError("cannot be given as a string")  # pragma: no cover - messages handled apart


def _set_message_from_string(msg: Message, value: str) -> None:
    name = msg.DESCRIPTOR.full_name
    if name == "google.protobuf.FieldMask":
        paths = [p.strip() for p in value.split(",") if p.strip()]
        msg.paths.extend(".".join(snake_case(x) for x in p.split(".")) for p in paths)  # type: ignore[attr-defined]
        return
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        try:
            msg.FromJsonString(value)  # type: ignore[attr-defined]
        except (ValueError, TypeError) as e:
            kind = ("an RFC 3339 timestamp" if name.endswith("Timestamp")
                    else 'a duration like "1.5s"')
            raise ValueError(f"{value!r} is not {kind} ({e})") from None
        return
    if name in WRAPPERS:
        inner: Any = msg.DESCRIPTOR.fields_by_name["value"]
        msg.value = convert_scalar(inner, value)  # type: ignore[attr-defined]
        return
    raise ValueError("is a message; set its fields with dotted names")  # pragma: no cover


def set_field(msg: Message, chain: list[FieldDescriptor], values: list[str], name: str) -> None:
    """Set the field at ``chain`` (from ``resolve``) to the string ``values``.

    A repeated field takes every value; any other field exactly one. Raises Problem.
    """
    target = msg
    for f in chain[:-1]:
        target = getattr(target, f.name)
    f = chain[-1]
    mt = f.message_type
    try:
        if mt is not None and mt.GetOptions().map_entry:
            raise ValueError("is a map; maps cannot be set from the query or the path")
        if f.is_repeated:
            container = getattr(target, f.name)
            if mt is not None:
                if mt.full_name not in SCALAR_MESSAGES:
                    raise ValueError("is a list of messages; send it in a JSON body")
                for v in values:
                    _set_message_from_string(container.add(), v)
            else:
                container.extend(convert_scalar(f, v) for v in values)
            return
        if len(values) != 1:
            raise ValueError(f"takes one value, got {len(values)}")
        if mt is not None:
            if mt.full_name not in SCALAR_MESSAGES:
                raise ValueError("is a message; set its fields with dotted names")
            sub = getattr(target, f.name)
            sub.Clear()
            _set_message_from_string(sub, values[0])
            sub.SetInParent()
        else:
            setattr(target, f.name, convert_scalar(f, values[0]))
    except ValueError as e:
        raise Problem(name, str(e)) from None


# -- query strings ----------------------------------------------------------------------


def parse_query(raw: bytes | str) -> dict[str, list[str]]:
    """``a=1&b=x&a=2`` → ``{"a": ["1", "2"], "b": ["x"]}`` ("+" is a space; blanks kept)."""
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    out: dict[str, list[str]] = {}
    if not raw:
        return out
    from urllib.parse import unquote_plus

    for pair in raw.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        key = unquote_plus(key, errors="strict") if "%" in key or "+" in key else key
        value = unquote_plus(value, errors="strict") if ("%" in value or "+" in value) else value
        out.setdefault(key, []).append(value)
    return out


class QueryBinder:
    """Sets query parameters on a request message, for one route.

    ``path_fields`` and ``body_fields`` are the field paths (proto spelling) that the
    path and the body set; a query parameter naming one of them, or a field inside or
    around one, is refused, as is every parameter when the body carries the whole
    message (``body: "*"``).
    """

    __slots__ = ("_body", "_cache", "_closed", "_desc", "_path")

    def __init__(self, desc: Descriptor, path_fields: Iterable[str] = (),
                 body_fields: Iterable[str] = (), *, closed: bool = False) -> None:
        self._desc = desc
        self._path = tuple(path_fields)
        self._body = tuple(body_fields)
        self._closed = closed
        self._cache: dict[str, list[FieldDescriptor] | Problem] = {}

    def _lookup(self, name: str) -> list[FieldDescriptor]:
        hit = self._cache.get(name)
        if hit is None:
            hit = self._resolve(name)
            if len(self._cache) < 1024:  # names are client-chosen: bound the cache
                self._cache[name] = hit
        if isinstance(hit, Problem):
            raise hit
        return hit

    def _resolve(self, name: str) -> list[FieldDescriptor] | Problem:
        if self._closed:
            return Problem(name, "unknown query parameter: this route takes every field "
                                 "from the JSON body")
        try:
            chain = resolve(self._desc, name.split("."))
        except Problem as p:
            return Problem(name, "unknown query parameter" if p.description == "unknown field"
                           else p.description)
        proto = ".".join(f.name for f in chain)
        for where, fields in (("the path", self._path), ("the body", self._body)):
            for r in fields:
                if proto == r or proto.startswith(r + ".") or r.startswith(proto + "."):
                    return Problem(name, f"is set by {where}, not the query")
        last = chain[-1]
        if last.message_type is not None and not last.is_repeated \
                and last.message_type.full_name not in SCALAR_MESSAGES:
            return Problem(name, "is a message; set its fields with dotted names")
        return chain

    def bind(self, msg: Message, query: dict[str, list[str]]) -> None:
        """Set every parameter; all problems are reported together (INVALID_ARGUMENT)."""
        problems: list[Problem] = []
        for name, values in query.items():
            try:
                set_field(msg, self._lookup(name), values, name)
            except Problem as p:
                problems.append(p)
        if problems:
            raise invalid(problems, reason="INVALID_QUERY_PARAMETER", what="bad query parameter")


# -- JSON bodies --------------------------------------------------------------------------

_FAILED = re.compile(r"Failed to parse (\S+) field: ")
_NO_FIELD = re.compile(r'has no field named "([^"]*)"')
_AT = re.compile(r"\s+at\s+\"?[\w.\[\]]+\"?\.*\s*$")


def _json_error(e: json_format.ParseError, desc: Descriptor, prefix: list[str]) -> Problem:
    """json_format's nested message → the field path (proto spelling) and a short reason."""
    text = str(e).split("\n", 1)[0]
    names = [*prefix, *_FAILED.findall(text)]
    unknown = _NO_FIELD.search(text)
    if unknown:
        names.append(unknown.group(1))
        reason = "unknown field"
    else:
        reason = _FAILED.split(text)[-1] if _FAILED.search(text) else text
        reason = _AT.sub("", reason).rstrip(".") or "invalid value"
    # Name the fields the way the proto does, where they exist.
    out: list[str] = []
    current: Descriptor | None = desc
    for n in names:
        f = field_by_any_name(current, n) if current is not None else None
        out.append(f.name if f is not None else n)
        current = f.message_type if f is not None else None
    return Problem(".".join(out) or "body", reason)


_JSON_KIND: dict[int, tuple[tuple[type, ...], str]] = {
    T.TYPE_STRING: ((str,), "a string"),
    T.TYPE_BYTES: ((str,), "a base64 string"),
    T.TYPE_BOOL: ((bool,), "true or false"),
    T.TYPE_ENUM: ((str, int), "an enum value name"),
    T.TYPE_DOUBLE: ((int, float, str), "a number"),
    T.TYPE_FLOAT: ((int, float, str), "a number"),
    **{t: ((int, str), "an integer") for t in _BOUNDS},
}
_STRING_MESSAGES = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"})


def _diagnose(desc: Descriptor, value: Any, prefix: list[str]) -> Problem | None:
    """The first JSON value whose type does not fit its field, for a clear message.

    Only run after json_format failed (its messages name a wrong-typed object's keys as
    unknown fields, say); None when this walk finds nothing wrong.
    """
    if not isinstance(value, dict):
        return Problem(".".join(prefix) or "body",
                       f"must be a JSON object, not {_json_type(value)}")
    for key, item in value.items():
        f = field_by_any_name(desc, key) if isinstance(key, str) else None
        path = [*prefix, f.name if f is not None else str(key)]
        if f is None:
            return Problem(".".join(path), "unknown field")
        if item is None:
            continue
        mt = f.message_type
        if mt is not None and mt.GetOptions().map_entry:
            if not isinstance(item, dict):
                return Problem(".".join(path), f"must be a JSON object, not {_json_type(item)}")
            continue
        items = [item]
        if f.is_repeated:
            if not isinstance(item, list):
                return Problem(".".join(path), f"must be a JSON array, not {_json_type(item)}")
            items = item
        for i, one in enumerate(items):
            where = [*path[:-1], f"{path[-1]}[{i}]"] if f.is_repeated else path
            if mt is not None:
                name = mt.full_name
                if name in _STRING_MESSAGES:
                    if not isinstance(one, str):
                        return Problem(".".join(where), f"must be a string, not {_json_type(one)}")
                elif not name.startswith("google.protobuf."):
                    p = _diagnose(mt, one, where)
                    if p is not None:
                        return p
                continue
            kinds, what = _JSON_KIND[f.type]
            if not isinstance(one, kinds) or (isinstance(one, bool) and bool not in kinds):
                return Problem(".".join(where), f"must be {what}, not {_json_type(one)}")
    return None


_OUTPUT_ONLY = field_behavior_pb2.OUTPUT_ONLY
#: what a JSON body is told for an output-only field, as the services word it
OUTPUT_ONLY_TEXT = "is output-only and cannot be set"
_VALUE = "google.protobuf.Value"


@cache
def output_only(f: FieldDescriptor) -> bool:
    """Whether ``f`` is ``google.api.field_behavior = OUTPUT_ONLY`` (``readOnly`` in the
    OpenAPI document, which forbids it in a request)."""
    return _OUTPUT_ONLY in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]


@cache
def accepts_null(f: FieldDescriptor) -> bool:
    """Whether a JSON body may send ``f`` as ``null`` (read as unset): where the OpenAPI
    document's schema admits null (``openapi.SchemaBuilder``), that is a field that
    ``emits_null`` (outside the messages a standard shapes), a wrapper, a
    ``google.protobuf.Value``; never a repeated field or a map, a scalar without presence
    or a oneof member."""
    if f.is_repeated:
        return False
    mt = f.message_type
    if mt is not None and (mt.full_name in WRAPPERS or mt.full_name == _VALUE):
        return True
    owner = f.containing_type
    return emits_null(f) and (owner is None or owner.full_name not in STANDARD_JSON)


#: a field the walk refuses: (whether for being output-only, else for a null, the problem)
_Refusal = tuple[bool, Problem]


def _object_refusals(desc: Descriptor, value: Any, prefix: list[str]) -> Iterator[_Refusal]:
    """The fields of a JSON object for ``desc`` that the document forbids, at any depth.
    Anything else wrong (an unknown name, a wrong type) is json_format's to find."""
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        f = field_by_any_name(desc, key) if isinstance(key, str) else None
        if f is None:
            continue
        path = [*prefix, f.name]
        if output_only(f):
            yield True, Problem(".".join(path), OUTPUT_ONLY_TEXT)
        else:
            yield from _value_refusals(f, item, path)


def _value_refusals(f: FieldDescriptor, value: Any, path: list[str]) -> Iterator[_Refusal]:
    """``_object_refusals`` of the JSON value of ``f``: a forbidden null, or what the
    messages inside it hold (a null list item or map value json_format refuses itself)."""
    if value is None:
        if not accepts_null(f):
            yield False, Problem(".".join(path), "must not be null")
        return
    mt = f.message_type
    if mt is None or mt.full_name.startswith("google.protobuf."):
        return
    if mt.GetOptions().map_entry:
        inner = mt.fields_by_name["value"].message_type
        if inner is not None and isinstance(value, dict):
            for key, item in value.items():
                yield from _object_refusals(inner, item, [*path[:-1], f"{path[-1]}[{key}]"])
    elif f.is_repeated:
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from _object_refusals(mt, item, [*path[:-1], f"{path[-1]}[{i}]"])
    else:
        yield from _object_refusals(mt, value, path)


def _refuse(request: Descriptor, refusals: Iterable[_Refusal]) -> None:
    """INVALID_ARGUMENT for the output-only fields found, else for the forbidden nulls.

    The reason is the services' for an output-only value: FIELD_NOT_UPDATABLE in an
    AIP-134 update (a request with an ``update_mask``), INVALID_ARGUMENT elsewhere.
    """
    found = list(refusals)
    if not found:
        return
    named = [p for is_output_only, p in found if is_output_only]
    if named:
        mask = request.fields_by_name.get("update_mask")
        update = mask is not None and mask.message_type is not None \
            and mask.message_type.full_name == "google.protobuf.FieldMask"
        raise invalid(named, reason="FIELD_NOT_UPDATABLE" if update else "INVALID_ARGUMENT",
                      what="output-only field in the request")
    raise invalid([p for _, p in found], reason="INVALID_JSON", what="wrong JSON type")


def load_json(body: bytes, loads: Callable[[bytes], Any] = json.loads) -> Any:
    """Bytes → a JSON value; malformed JSON is INVALID_ARGUMENT (field ``body``)."""
    try:
        return loads(body)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise invalid([Problem("body", f"malformed JSON ({e})")], reason="INVALID_JSON",
                      what="the request body is not valid JSON") from None


def merge_json(msg: Message, value: Any, body_field: str) -> None:
    """Merge a decoded JSON value into ``msg``: the whole message (``"*"``) or one field."""
    desc: Any = msg.DESCRIPTOR
    if body_field == "*":
        if not isinstance(value, dict):
            raise invalid([Problem("body", f"must be a JSON object, not {_json_type(value)}")],
                          reason="INVALID_JSON", what="wrong JSON type")
        target, prefix, data = msg, [], value
        _refuse(desc, _object_refusals(desc, value, []))
    else:
        f = desc.fields_by_name[body_field]
        is_msg = f.message_type is not None and not f.is_repeated and (
            f.message_type.full_name not in SCALAR_MESSAGES
            and not f.message_type.full_name.startswith("google.protobuf.")
        )
        if is_msg:
            if not isinstance(value, dict):
                raise invalid(
                    [Problem(body_field, f"must be a JSON object, not {_json_type(value)}")],
                    reason="INVALID_JSON", what="wrong JSON type")
            target, prefix, data = getattr(msg, body_field), [body_field], value
            target.SetInParent()
        else:
            target, prefix, data = msg, [], {f.json_name: value}
        # the body field itself may be output-only: the document drops its readOnly
        _refuse(desc, _value_refusals(f, value, [body_field]))
    try:
        json_format.ParseDict(data, target, ignore_unknown_fields=False)
    except json_format.ParseError as e:
        target_desc: Any = target.DESCRIPTOR
        p = _diagnose(target_desc, data, prefix) or _json_error(e, desc, prefix)
        raise invalid([p], reason="INVALID_JSON", what="bad JSON field") from None
    except (RecursionError, ValueError, TypeError, AttributeError) as e:
        raise invalid([Problem(".".join(prefix) or "body", str(e) or type(e).__name__)],
                      reason="INVALID_JSON", what="bad JSON field") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"



# -- responses ----------------------------------------------------------------------------
#
# grpc-gateway v2's default marshaler is protojson with ``EmitUnpopulated: true`` and
# ``UseProtoNames: false`` (runtime/marshaler_registry.go), for responses and error
# bodies alike. protojson then writes every field a message has (encode.go,
# ``unpopulatedFieldRanger``): a field without presence at its default as ``false``,
# ``0``, ``""``, ``[]`` or ``{}``; a field with presence that is unset (a singular
# message field, a proto2 scalar) as ``null``; an unset oneof member (a proto3
# ``optional`` field included: its synthetic oneof counts) or extension not at all.
# Keys come in declaration order (``order.IndexNameFieldOrder``), ``@type`` first.
# json_format's ``always_print_fields_with_no_presence`` does the first part; the
# ``null``s and the order are done here, by a walk over the message beside its JSON.

_SPECIAL_JSON = frozenset(  # well-known types with their own JSON form: nothing to add
    f"google.protobuf.{n}"
    for n in ("Timestamp", "Duration", "FieldMask", "Struct", "Value", "ListValue", "Empty")
) | WRAPPERS
_ANY = "google.protobuf.Any"

#: Response messages that a standard, not protojson, shapes (they keep
#: json_format's default: a member at its default is left out), with the members the
#: standard requires, always written: RFC 7517 section 5 (a JWK Set has ``keys``; a JWK
#: member that does not apply to the key type is absent, not empty), RFC 6749 section 5.1
#: (the token response), RFC 7662 section 2.2 (``active``, and for an inactive token
#: nothing else).
STANDARD_JSON: dict[str, tuple[str, ...]] = {
    "accounts.v1.GetJwksResponse": ("keys",),
    "accounts.v1.CreateTokenResponse": ("access_token", "token_type"),
    "accounts.v1.IntrospectTokenResponse": ("active",),
}


def emits_null(f: FieldDescriptor) -> bool:
    """Whether grpc-gateway writes ``f`` as ``null`` while it is unset: a singular field
    with presence, outside any oneof (the OpenAPI document makes these nullable)."""
    return (not f.is_repeated and f.has_presence and f.containing_oneof is None
            and not f.is_extension)


# What to do with each field of a message type, in declaration order (protojson's):
# (json name, proto name, what it holds, whether it is null when unset).
_PLAIN, _MESSAGE, _MESSAGES, _MESSAGE_MAP = range(4)
_Plan = tuple[tuple[str, str, int, bool], ...]
_PLANS: dict[str, _Plan] = {}
_ABSENT: Any = object()


def _kind(f: FieldDescriptor) -> int:
    mt = f.message_type
    if mt is None or mt.full_name in _SPECIAL_JSON:
        return _PLAIN
    if mt.GetOptions().map_entry:
        value = mt.fields_by_name["value"].message_type
        return _MESSAGE_MAP if value is not None and value.full_name not in _SPECIAL_JSON \
            else _PLAIN
    return _MESSAGES if f.is_repeated else _MESSAGE


def _plan(desc: Descriptor) -> _Plan:
    plan = _PLANS.get(desc.full_name)
    if plan is None:
        plan = _PLANS[desc.full_name] = tuple((f.json_name, f.name, _kind(f), emits_null(f))
                                              for f in desc.fields)
    return plan


def _map_key(key: Any) -> str:
    return ("true" if key else "false") if isinstance(key, bool) else str(key)


def _unpacked(msg: Any) -> Message | None:
    """The message an Any holds (error details), or None for a type this process lacks."""
    try:
        desc = descriptor_pool.Default().FindMessageTypeByName(msg.TypeName())
    except KeyError:
        return None
    inner: Message = message_factory.GetMessageClass(desc)()
    return inner if msg.Unpack(inner) else None


def _as_gateway(msg: Message, out: dict[str, Any]) -> dict[str, Any]:
    """json_format's object for ``msg`` (fields without presence printed) → protojson's
    with ``EmitUnpopulated``: an unset field with presence as ``null`` (json_format prints
    every set field, so a missing key is an unset field), every key in declaration
    order, ``@type`` first. Nested objects are redone in place of the old."""
    desc: Any = msg.DESCRIPTOR
    name = desc.full_name
    if name in _SPECIAL_JSON:
        return out
    if name == _ANY:  # fields of the packed message beside "@type"
        inner = _unpacked(msg)
        return out if inner is None or inner.DESCRIPTOR.full_name in _SPECIAL_JSON \
            else _as_gateway(inner, out)
    new: dict[str, Any] = {"@type": out["@type"]} if "@type" in out else {}
    for json_name, proto_name, kind, nullable in _plan(desc):
        value = out.get(json_name, _ABSENT)
        if value is _ABSENT:  # unset: null if it has presence, else (a oneof member) absent
            if nullable:
                new[json_name] = None
            continue
        if kind == _MESSAGE:
            value = _as_gateway(getattr(msg, proto_name), value)
        elif kind == _MESSAGES:
            value = [_as_gateway(m, v) for m, v in zip(getattr(msg, proto_name), value,
                                                          strict=True)]
        elif kind == _MESSAGE_MAP:
            value = {_map_key(k): _as_gateway(m, value[_map_key(k)])
                     for k, m in getattr(msg, proto_name).items()}
        new[json_name] = value
    return new


def message_json(msg: Message) -> dict[str, Any]:
    """A message → its JSON object, as grpc-gateway v2 prints it (lowerCamelCase names,
    every field written: see above), except the messages of STANDARD_JSON."""
    desc: Any = msg.DESCRIPTOR
    required = STANDARD_JSON.get(desc.full_name)
    if required is not None:
        out = json_format.MessageToDict(msg, preserving_proto_field_name=False)
        names = [desc.fields_by_name[n].json_name for n in required]
        if any(n not in out for n in names):  # a required member at its default
            full = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)
            out.update({n: full[n] for n in names if n not in out})
        return out
    out = json_format.MessageToDict(msg, always_print_fields_with_no_presence=True,
                                    preserving_proto_field_name=False)
    return _as_gateway(msg, out)


def stream_chunk(key: str, value: Any) -> bytes:
    """One line of a server stream, as grpc-gateway's ``ForwardResponseStream`` writes it
    with its JSON marshaler and newline delimiter: ``{"result": <message>}`` for each
    message, ``{"error": <status>}`` for the failure that ends the stream."""
    return json.dumps({key: value}, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def response_json(msg: Message, response_body: str = "") -> Any:
    """The JSON value of a response: the whole message, or its field ``response_body``
    (``google.api.http``'s ``response_body``), as grpc-gateway writes them."""
    out = message_json(msg)
    if not response_body:
        return out
    f: Any = msg.DESCRIPTOR.fields_by_name[response_body]
    return out.get(f.json_name)
