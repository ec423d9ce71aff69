#!/usr/bin/env python3
"""Write and check what the REST side is documented from: the proto comments the server
ships (src/accounts_grpc/rest/descriptors.binpb) and the repository's openapi.json.

Usage (from anywhere; paths are relative to the repository root), after
``protogen.py gen`` (the document is built from the generated modules):

    python scripts/openapigen.py descriptors      # rebuild descriptors.binpb from protos/
    python scripts/openapigen.py openapi          # rewrite openapi.json (--stdout: print it)
    python scripts/openapigen.py check            # exit 1 if either is stale

``make gen`` runs ``descriptors`` and ``openapi``, ``make openapi`` the latter, ``make
check-gen`` ``check``. Dev time only: protoc comes from grpcio-tools through protogen.py's
helper, and the document from the installed package's ``accounts_grpc.rest.openapi``
(which builds the same document at run time for ``GET /openapi.json``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from protogen import PROTO_ROOT, ROOT, protoc

from accounts_grpc.rest import openapi

OPENAPI_JSON = ROOT / "openapi.json"


def build_descriptors(proto_root: Path = PROTO_ROOT) -> bytes:
    """protoc → a FileDescriptorSet of proto_root's files, keeping only the source info
    locations that carry comments, and no default json_name (as the *_pb2 modules)."""
    with tempfile.TemporaryDirectory(prefix="openapi-desc-") as tmp:
        out = Path(tmp, "set.binpb")
        protoc(["--include_source_info", f"--descriptor_set_out={out}"], proto_root)
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    for fdp in fds.file:
        openapi.strip_default_json_names(fdp)
        keep = [loc for loc in fdp.source_code_info.location
                if loc.leading_comments or loc.trailing_comments]
        fdp.source_code_info.ClearField("location")
        for loc in keep:
            new = fdp.source_code_info.location.add()
            new.path.extend(loc.path)
            if loc.leading_comments:
                new.leading_comments = loc.leading_comments
            if loc.trailing_comments:
                new.trailing_comments = loc.trailing_comments
    return fds.SerializeToString(deterministic=True)


def write_atomically(target: Path, data: bytes) -> None:
    """Write aside and rename, so that a reader never sees half a file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def cmd_descriptors(_: argparse.Namespace) -> int:
    write_atomically(openapi.DESCRIPTORS, build_descriptors())
    print(f"openapigen: wrote {openapi.DESCRIPTORS.relative_to(ROOT)}")
    return 0


def cmd_openapi(ns: argparse.Namespace) -> int:
    text = openapi.render()
    if ns.stdout:
        sys.stdout.write(text)
        return 0
    write_atomically(OPENAPI_JSON, text.encode())
    print(f"openapigen: wrote {OPENAPI_JSON.relative_to(ROOT)}")
    return 0


def cmd_check(_: argparse.Namespace) -> int:
    problems = []
    if build_descriptors() != openapi.DESCRIPTORS.read_bytes():
        problems.append(f"{openapi.DESCRIPTORS.relative_to(ROOT)} is stale: run `make gen`")
    if not OPENAPI_JSON.is_file() or OPENAPI_JSON.read_text() != openapi.render():
        problems.append(f"{OPENAPI_JSON.relative_to(ROOT)} is stale: run `make openapi`")
    for p in problems:
        print(f"openapigen: {p}", file=sys.stderr)
    if not problems:
        print("openapigen: descriptors and openapi.json are up to date")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("descriptors", help="rebuild descriptors.binpb from protos/"
                   ).set_defaults(func=cmd_descriptors)
    doc = sub.add_parser("openapi", help="rewrite openapi.json")
    doc.add_argument("--stdout", action="store_true", help="print the document instead")
    doc.set_defaults(func=cmd_openapi)
    sub.add_parser("check", help="fail if descriptors.binpb or openapi.json is stale"
                   ).set_defaults(func=cmd_check)
    ns = parser.parse_args(argv)
    return int(ns.func(ns))


if __name__ == "__main__":
    sys.exit(main())
