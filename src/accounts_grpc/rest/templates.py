"""google.api.http path templates: parse once, match many times.

The grammar is google/api/http.proto's (and grpc-gateway's)::

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

A template compiles to a flat tuple of segment matchers (literal, ``*``, ``**``), each
tagged with the variable it feeds, if any. Matching a request path is a walk over that
tuple: no regular expressions, no allocation beyond the captured values. This module
does no I/O and knows nothing about protobuf messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# RFC 3986 pchar minus what the grammar uses ("/", "{", "}", "=", "*", ":" ends a verb).
_LITERAL = re.compile(r"[A-Za-z0-9\-._~!$&'()+,;@%]+\Z")

LITERAL = 0
ONE = 1  # "*": exactly one segment
REST = 2  # "**": zero or more segments (only last, before the verb)


class TemplateError(ValueError):
    """A google.api.http path template that does not follow the grammar."""


@dataclass(frozen=True)
class Segment:
    kind: int  # LITERAL | ONE | REST
    literal: str = ""  # for LITERAL
    var: int = -1  # index into PathTemplate.variables, -1: not captured


@dataclass(frozen=True)
class PathTemplate:
    """A compiled template. ``variables`` are field paths such as ``("account", "id")``."""

    source: str
    segments: tuple[Segment, ...]
    verb: str
    variables: tuple[tuple[str, ...], ...]
    # Each variable's own sub-template, for documentation: "accounts/*" for
    # {name=accounts/*}, "*" for a plain {id}.
    var_patterns: tuple[str, ...] = field(default=())

    @property
    def has_rest(self) -> bool:
        return any(s.kind == REST for s in self.segments)

    @property
    def specificity(self) -> tuple[int, ...]:
        """Sort key: at the first segment where two templates differ, a literal beats
        ``*``, which beats ``**``; a template with a verb beats one without."""
        return (*(s.kind for s in self.segments), 0 if self.verb else 1)

    @property
    def field_paths(self) -> list[str]:
        return [".".join(v) for v in self.variables]

    def match(self, parts: list[str], verb: str) -> list[str] | None:
        """Captured (still percent-encoded) values per variable, or None.

        ``parts`` are the raw path segments (split on "/", not yet unescaped);
        ``verb`` is what followed the last ":" of the last segment ("" for none).
        """
        if verb != self.verb:
            return None
        segs = self.segments
        n = len(parts)
        if not self.has_rest:
            if n != len(segs):
                return None
            captured: list[list[str]] = [[] for _ in self.variables]
            for seg, part in zip(segs, parts, strict=True):
                if seg.kind == LITERAL:
                    if part != seg.literal:
                        return None
                elif not part:  # a variable segment never matches the empty string
                    return None
                if seg.var >= 0:
                    captured[seg.var].append(part)
            return ["/".join(c) for c in captured]
        # With "**" (always the last segment): the fixed prefix, then the rest.
        fixed = len(segs) - 1
        if n < fixed:
            return None
        captured = [[] for _ in self.variables]
        for seg, part in zip(segs[:fixed], parts[:fixed], strict=True):
            if seg.kind == LITERAL:
                if part != seg.literal:
                    return None
            elif not part:
                return None
            if seg.var >= 0:
                captured[seg.var].append(part)
        last = segs[fixed]
        if last.var >= 0:
            captured[last.var].extend(parts[fixed:])
        return ["/".join(c) for c in captured]

    def openapi_path(self, names: list[str] | None = None) -> str:
        """The template as an OpenAPI path: ``/v1/accounts/{account.id}:close``.

        ``names`` renames the variables (in order); unbound wildcards, which OpenAPI
        cannot express, are shown as ``{_wildcardN}``.
        """
        out: list[str] = []
        done: set[int] = set()
        wild = 0
        names = names or self.field_paths
        for seg in self.segments:
            if seg.var >= 0:
                if seg.var not in done:
                    out.append("{" + names[seg.var] + "}")
                    done.add(seg.var)
            elif seg.kind == LITERAL:
                out.append(seg.literal)
            else:
                wild += 1
                out.append(f"{{_wildcard{wild}}}")
        path = "/" + "/".join(out)
        return path + (":" + self.verb if self.verb else "")


def parse_template(source: str) -> PathTemplate:
    """Compile a google.api.http path template; raises TemplateError."""
    if not source.startswith("/"):
        raise TemplateError(f"{source!r}: a path template starts with '/'")
    body = source[1:]
    verb = ""
    # The verb is a ":" after the last "/" that is outside braces.
    depth = 0
    colon = -1
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "/" and depth == 0:
            colon = -1
        elif ch == ":" and depth == 0 and colon < 0:
            colon = i
    if depth != 0:
        raise TemplateError(f"{source!r}: unbalanced braces")
    if colon >= 0:
        body, verb = body[:colon], body[colon + 1 :]
        if not _LITERAL.match(verb):
            raise TemplateError(f"{source!r}: bad verb {verb!r}")
    segments: list[Segment] = []
    variables: list[tuple[str, ...]] = []
    patterns: list[str] = []
    for token in _split_top(body, source):
        if token.startswith("{"):
            inner = token[1:-1]
            name, _, pattern = inner.partition("=")
            path = tuple(name.split("."))
            if not all(_IDENT.match(p) for p in path):
                raise TemplateError(f"{source!r}: bad field path {name!r}")
            if path in variables:
                raise TemplateError(f"{source!r}: field {name!r} bound twice")
            pattern = pattern or "*"
            index = len(variables)
            variables.append(path)
            patterns.append(pattern)
            for sub in pattern.split("/"):
                if sub.startswith("{"):
                    raise TemplateError(f"{source!r}: nested variable in {token!r}")
                segments.append(_segment(sub, source, index))
        else:
            segments.append(_segment(token, source, -1))
    for i, seg in enumerate(segments):
        if seg.kind == REST and i != len(segments) - 1:
            raise TemplateError(f"{source!r}: '**' must be the last segment")
    return PathTemplate(source, tuple(segments), verb, tuple(variables), tuple(patterns))


def _split_top(body: str, source: str) -> list[str]:
    """Split on "/" outside braces."""
    out: list[str] = []
    depth = 0
    start = 0
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "/" and depth == 0:
            out.append(body[start:i])
            start = i + 1
    out.append(body[start:])
    for tok in out:
        if not tok:
            raise TemplateError(f"{source!r}: empty segment")
        if "{" in tok and not (tok.startswith("{") and tok.endswith("}")):
            raise TemplateError(f"{source!r}: a variable must be a whole segment: {tok!r}")
    return out


def _segment(token: str, source: str, var: int) -> Segment:
    if token == "*":
        return Segment(ONE, var=var)
    if token == "**":
        return Segment(REST, var=var)
    if not _LITERAL.match(token):
        raise TemplateError(f"{source!r}: bad literal segment {token!r}")
    return Segment(LITERAL, literal=token, var=var)


def split_path(raw_path: str) -> list[tuple[list[str], str]]:
    """The ways to read a raw request path: ``[(parts, verb), ...]``, most specific first.

    ``/v1/accounts/a1:close`` reads as parts ``[v1, accounts, a1]`` with verb ``close``,
    and also, should no template with that verb match, as ``[v1, accounts, a1:close]``
    with no verb (a ":" may be part of an id). Segments stay percent-encoded, so an
    encoded "/" (``%2F``) stays inside its segment.
    """
    parts = raw_path[1:].split("/") if raw_path.startswith("/") else raw_path.split("/")
    last = parts[-1]
    idx = last.rfind(":")
    if idx > 0:
        return [([*parts[:-1], last[:idx]], last[idx + 1 :]), (parts, "")]
    return [(parts, "")]


def unescape(value: str) -> str:
    """A captured path value, percent-decoded (``%2F`` inside one segment becomes "/")."""
    return unquote(value) if "%" in value else value
