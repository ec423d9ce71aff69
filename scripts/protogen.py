#!/usr/bin/env python3
"""Generate, check and lint the accounts.v1 protos.

Usage (from anywhere; paths are relative to the repository root):

    python scripts/protogen.py gen                   # regenerate gen/accounts
    python scripts/protogen.py check                 # exit 1 if gen/ is stale
    python scripts/protogen.py lint                  # buf lint (STANDARD + COMMENTS)
    python scripts/protogen.py breaking --against REF  # buf breaking vs a git ref

Code generation uses ``python -m grpc_tools.protoc`` (the protoc bundled with
grpcio-tools, which also ships the google/protobuf well-known types) with
googleapis-common-protos for ``google/api/*.proto``. buf's remote
dependencies (BSR) are not reachable, so lint and breaking run on a
FileDescriptorSet image built by protoc. Only the standard library and
grpc_tools are used.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GEN_ROOT = ROOT / "gen"
PACKAGE_DIR = "accounts"  # gen/accounts, importable as the top-level package `accounts`
BUILD_DIR = ROOT / "build"
IMAGE = BUILD_DIR / "image.binpb"
BUF = ROOT / "node_modules" / ".bin" / "buf"
BUF_CONFIG = ROOT / "buf.yaml"
LINT_PATH = "accounts"  # lint our files only, not the google/* imports in the image

# Files gen/ holds besides protoc's output (the before-stop hook ignores them).
EXTRA_FILES = {
    Path(PACKAGE_DIR, "__init__.py"): "",
    Path(PACKAGE_DIR, "v1", "__init__.py"): "",
    Path(PACKAGE_DIR, "py.typed"): "",
}
IGNORED_NAMES = {"__init__.py", "__pycache__", "py.typed"}


def googleapis_include() -> Path:
    """The site-packages directory that holds googleapis-common-protos' google/api/*.proto."""
    import google.api

    return Path(next(iter(google.api.__path__))).resolve().parent.parent


def proto_files(proto_root: Path = PROTO_ROOT) -> list[str]:
    """Every .proto under proto_root, relative to it, sorted (deterministic output)."""
    return sorted(p.relative_to(proto_root).as_posix() for p in proto_root.rglob("*.proto"))


def protoc(args: list[str], proto_root: Path = PROTO_ROOT) -> None:
    files = proto_files(proto_root)
    if not files:
        sys.exit(f"protogen: no .proto files under {proto_root}")
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{proto_root}",
        f"-I{googleapis_include()}",
        *args,
        *files,
    ]
    result = subprocess.run(cmd, cwd=proto_root, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        sys.exit(f"protogen: protoc failed (exit {result.returncode})")
    if result.stderr.strip():  # warnings, e.g. unused imports
        sys.stderr.write(result.stderr)


def generate_into(out: Path) -> None:
    """Run protoc into `out` and add the package marker files."""
    out.mkdir(parents=True, exist_ok=True)
    protoc([f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"])
    for rel, content in EXTRA_FILES.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def cmd_gen(_: argparse.Namespace) -> int:
    GEN_ROOT.mkdir(exist_ok=True)
    # Stage next to gen/ so the final swap is a rename on one file system.
    with tempfile.TemporaryDirectory(prefix=".protogen-", dir=ROOT) as tmp:
        staged = Path(tmp)
        generate_into(staged)
        unexpected = sorted(p.name for p in staged.iterdir() if p.name != PACKAGE_DIR)
        if unexpected:
            sys.exit(f"protogen: protoc wrote outside {PACKAGE_DIR}/: {unexpected}")
        target = GEN_ROOT / PACKAGE_DIR
        old = Path(tmp, "old")
        if target.exists():
            target.rename(old)
        (staged / PACKAGE_DIR).rename(target)
    print(f"protogen: generated {len(proto_files())} protos into {target.relative_to(ROOT)}/")
    return 0


def tree_files(root: Path) -> dict[str, Path]:
    """Files under root by relative path, without package markers and caches."""
    files: dict[str, Path] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and not IGNORED_NAMES.intersection(rel.parts):
            files[rel.as_posix()] = path
    return files


def diff_trees(fresh: Path, current: Path) -> list[str]:
    """What differs between freshly generated code and gen/ (byte for byte)."""
    want, have = tree_files(fresh), tree_files(current)
    problems = [f"missing from gen/: {rel}" for rel in sorted(want.keys() - have.keys())]
    problems += [f"not produced by protoc: {rel}" for rel in sorted(have.keys() - want.keys())]
    problems += [
        f"differs: {rel}"
        for rel in sorted(want.keys() & have.keys())
        if want[rel].read_bytes() != have[rel].read_bytes()
    ]
    return problems


def cmd_check(_: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="protogen-check-") as tmp:
        fresh = Path(tmp)
        generate_into(fresh)
        if not (GEN_ROOT / PACKAGE_DIR).is_dir():
            print("protogen: gen/accounts is missing; run `make gen`", file=sys.stderr)
            return 1
        problems = diff_trees(fresh / PACKAGE_DIR, GEN_ROOT / PACKAGE_DIR)
        missing_markers = [str(rel) for rel in EXTRA_FILES if not (GEN_ROOT / rel).is_file()]
    if problems or missing_markers:
        print(
            "protogen: gen/ is stale (it does not match the protos); run `make gen`:",
            file=sys.stderr,
        )
        for line in problems + [f"missing marker file: gen/{m}" for m in missing_markers]:
            print(f"  {line}", file=sys.stderr)
        return 1
    print("protogen: gen/ is up to date")
    return 0


def ensure_buf() -> Path:
    if not os.access(BUF, os.X_OK):
        print("protogen: node_modules/.bin/buf missing; running npm install", file=sys.stderr)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=ROOT, check=True
        )
    if not os.access(BUF, os.X_OK):
        sys.exit("protogen: buf is still missing after npm install")
    return BUF


def build_image(out: Path, proto_root: Path = PROTO_ROOT) -> None:
    """Write a buf image (a FileDescriptorSet with imports and source info) to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write aside and rename, so a concurrent lint never reads a half-written image.
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", dir=out.parent)
    os.close(fd)
    try:
        protoc(
            ["--include_imports", "--include_source_info", f"--descriptor_set_out={tmp}"],
            proto_root,
        )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def run_buf(args: list[str]) -> int:
    result = subprocess.run([str(ensure_buf()), *args, "--config", str(BUF_CONFIG)], cwd=ROOT)
    return result.returncode


def cmd_lint(_: argparse.Namespace) -> int:
    build_image(IMAGE)
    rc = run_buf(["lint", str(IMAGE), "--path", LINT_PATH])
    if rc == 0:
        print("protogen: buf lint (STANDARD + COMMENTS) passed")
    else:
        print(f"protogen: buf lint failed (exit {rc})", file=sys.stderr)
    return rc


def cmd_breaking(ns: argparse.Namespace) -> int:
    build_image(IMAGE)
    against = BUILD_DIR / "against.binpb"
    with tempfile.TemporaryDirectory(prefix="protogen-against-") as tmp:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", ns.against, "protos"], cwd=ROOT, capture_output=True
        )
        if archive.returncode != 0:
            sys.stderr.write(archive.stderr.decode(errors="replace"))
            sys.exit(f"protogen: cannot read protos/ at {ns.against!r}")
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        build_image(against, Path(tmp, "protos"))
    rc = run_buf(["breaking", str(IMAGE), "--against", str(against), "--path", LINT_PATH])
    if rc == 0:
        print(f"protogen: no breaking changes against {ns.against}")
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gen", help="regenerate gen/accounts from protos/").set_defaults(func=cmd_gen)
    sub.add_parser("check", help="fail if gen/ is stale").set_defaults(func=cmd_check)
    sub.add_parser("lint", help="buf lint a protoc-built image").set_defaults(func=cmd_lint)
    breaking = sub.add_parser("breaking", help="buf breaking against a git ref")
    breaking.add_argument("--against", default="origin/main", help="git ref (default origin/main)")
    breaking.set_defaults(func=cmd_breaking)
    ns = parser.parse_args(argv)
    return int(ns.func(ns))


if __name__ == "__main__":
    sys.exit(main())
