"""Update masks (AIP-134) as API.md pins them.

- No mask, or ``*``: every field the request populates.
- A masked path that is unknown or output-only: INVALID_ARGUMENT (field ``update_mask``).
- Without a mask, a populated output-only field is INVALID_ARGUMENT too (never silently
  ignored); the identity (``id``) and ``etag`` are not changes and are skipped.
- Without a mask, a populated field whose value equals the stored one asks for no change:
  pass such paths as ``unchanged`` and they are dropped (output-only or beyond the caller's
  rights, they are then no error), so a client may send back the resource it just read
  with a few fields edited. A masked path is always an explicit request and is checked.
- Paths the caller may not change: PERMISSION_DENIED, checked by the use case with
  ``require_paths_allowed``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from accounts_grpc.domain.errors import FieldViolation, InvalidArgument, PermissionDenied

IDENTITY = frozenset({"id", "etag"})


def snake(path: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in path)


def resolve_mask(
    resource: str,
    paths: Sequence[str],
    populated: Iterable[str],
    *,
    updatable: Collection[str],
    output_only: Collection[str],
    unchanged: Collection[str] = (),
) -> list[str]:
    """The fields to change, validated. ``resource`` names the request field (e.g. "account").

    ``unchanged``: populated paths whose value equals the stored one (used only when
    there is no mask, or ``*``).
    """
    populated = [p for p in populated if p not in IDENTITY]
    normalized = [snake(p.strip()) for p in paths if p.strip()]
    if not normalized or normalized == ["*"]:
        populated = [p for p in populated if p not in unchanged]
        bad = [p for p in populated if p in output_only or p not in updatable]
        if bad:
            raise InvalidArgument(
                f"{resource}: {', '.join(bad)} cannot be updated (output-only or immutable)",
                [
                    FieldViolation(
                        f"{resource}.{p}", "is output-only or immutable and cannot be updated"
                    )
                    for p in bad
                ],
                reason="FIELD_NOT_UPDATABLE",
            )
        return sorted(set(populated))
    violations = []
    for i, p in enumerate(normalized):
        if p == "*":
            violations.append(
                FieldViolation(f"update_mask.paths[{i}]", "'*' must be the only path")
            )
        elif p.startswith(resource + "."):
            violations.append(
                FieldViolation(
                    f"update_mask.paths[{i}]",
                    f"paths are relative to {resource}: use {p[len(resource) + 1 :]!r}",
                )
            )
        elif p in output_only or p in IDENTITY:
            violations.append(FieldViolation(f"update_mask.paths[{i}]", f"{p!r} is output-only"))
        elif p not in updatable:
            violations.append(
                FieldViolation(
                    f"update_mask.paths[{i}]",
                    f"{p!r} is not a field of {resource} that can be updated",
                )
            )
    if violations:
        raise InvalidArgument(
            f"update_mask: {violations[0].description}", violations, reason="INVALID_UPDATE_MASK"
        )
    return sorted(set(normalized))


def require_paths_allowed(
    paths: Iterable[str], allowed: Collection[str], who: str = "the caller"
) -> None:
    denied = sorted(p for p in paths if p not in allowed)
    if denied:
        raise PermissionDenied(
            f"{who} may not change {', '.join(denied)}",
            reason="FIELD_PERMISSION_DENIED",
            metadata={"fields": ",".join(denied)},
        )
