#!/usr/bin/env python3
"""Generate, check and lint the accounts.v1 protos.

Usage (from anywhere; paths are relative to the repository root):

    python scripts/protogen.py gen                   # regenerate gen/accounts
    python scripts/protogen.py check                 # exit 1 if gen/ is stale
    python scripts/protogen.py deps                  # lay down build/proto-deps, proto-released
    python scripts/protogen.py lint                  # buf lint (STANDARD + COMMENTS)
    python scripts/protogen.py breaking [--against REF]  # buf breaking vs protos/RELEASED or REF

Code generation uses ``python -m grpc_tools.protoc`` (the protoc bundled with
grpcio-tools, which also ships the google/protobuf well-known types) with
googleapis-common-protos for ``google/api/*.proto``. buf's remote dependencies (BSR)
are not reachable, so ``deps`` copies the google/api protos ours import from that
package into build/proto-deps/, the second module of buf.yaml: plain ``buf lint``,
``buf build`` and ``buf breaking`` then work from the root. A git input
(``--against .git#ref=...``) cannot work, since build/ is not in git, so ``deps`` also
lays down build/proto-released/: protos/ at the commit named in protos/RELEASED, with
those deps, for ``buf breaking --against build/proto-released``. Only the standard
library and grpc_tools are used.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GEN_ROOT = ROOT / "gen"
PACKAGE_DIR = "accounts"  # gen/accounts, importable as the top-level package `accounts`
BUILD_DIR = ROOT / "build"
DEPS_DIR = BUILD_DIR / "proto-deps"  # google/api/*.proto, buf.yaml's second module
RELEASED_DIR = BUILD_DIR / "proto-released"  # the contract at RELEASED_MARKER, with its deps
RELEASED_MARKER = PROTO_ROOT / "RELEASED"  # the last commit whose protos are released
BUF = ROOT / "node_modules" / ".bin" / "buf"
IMPORT = re.compile(r'^import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.MULTILINE)
# buf.yaml of an against tree (no lint or breaking rules: the input's apply).
AGAINST_BUF_YAML = b"""# Written by scripts/protogen.py: a released contract, for buf breaking.
version: v2
modules:
  - path: protos
  - path: deps
"""

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


def googleapis_closure() -> dict[str, bytes]:
    """The google/* protos that ours import, transitively, by import path. The
    google/protobuf well-known types are left out: buf and protoc carry their own."""
    source = googleapis_include()
    ours = (path.read_text() for path in PROTO_ROOT.rglob("*.proto"))
    wanted = [name for text in ours for name in IMPORT.findall(text)]
    found: dict[str, bytes] = {}
    while wanted:
        name = wanted.pop()
        if name in found or not name.startswith("google/") or name.startswith("google/protobuf/"):
            continue
        if not (source / name).is_file():
            sys.exit(f"protogen: {name} is not in googleapis-common-protos ({source})")
        found[name] = (source / name).read_bytes()
        wanted += IMPORT.findall(found[name].decode())
    return found


def released_ref() -> str:
    ref = RELEASED_MARKER.read_text().strip() if RELEASED_MARKER.is_file() else ""
    if not ref:
        sys.exit(f"protogen: {RELEASED_MARKER.relative_to(ROOT)} names no commit")
    return ref


def protos_at(ref: str) -> dict[str, bytes]:
    """protos/*.proto as commit `ref` has them, read with git archive (no checkout)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref, "protos"], cwd=ROOT, capture_output=True
    )
    if archive.returncode != 0:
        sys.stderr.write(archive.stderr.decode(errors="replace"))
        sys.exit(f"protogen: cannot read protos/ at {ref!r} (a commit of this clone's history)")
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        for member in tar.getmembers():
            content = tar.extractfile(member) if member.name.endswith(".proto") else None
            if content is not None:
                files[member.name] = content.read()
    return files


def against_tree(ref: str, deps: dict[str, bytes]) -> dict[str, bytes]:
    """A buf workspace of the contract at `ref`: its protos/ and today's google/api deps."""
    named_deps = {f"deps/{name}": content for name, content in deps.items()}
    return {"buf.yaml": AGAINST_BUF_YAML, **named_deps, **protos_at(ref)}


def sync_tree(root: Path, files: dict[str, bytes]) -> None:
    """Make root hold exactly `files`. Each is written aside and renamed into place, and an
    unchanged one is left alone, so a buf run in a parallel test never reads a partial tree."""
    for rel, content in files.items():
        path = root / rel
        if path.is_file() and path.read_bytes() == content:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
        os.replace(tmp, path)
    for path in root.rglob("*"):
        stale = path.relative_to(root).as_posix() not in files and not path.name.startswith(".")
        if path.is_file() and stale:
            path.unlink()


def lay_deps() -> dict[str, bytes]:
    deps = googleapis_closure()
    sync_tree(DEPS_DIR, deps)
    sync_tree(RELEASED_DIR, against_tree(released_ref(), deps))
    return deps


def cmd_deps(_: argparse.Namespace) -> int:
    lay_deps()
    print(
        f"protogen: {DEPS_DIR.relative_to(ROOT)}/ (google/api) and "
        f"{RELEASED_DIR.relative_to(ROOT)}/ (protos/ at {released_ref()[:12]}) are laid down"
    )
    return 0


def run_buf(args: list[str]) -> int:
    return subprocess.run([str(ensure_buf()), *args], cwd=ROOT).returncode


def cmd_lint(_: argparse.Namespace) -> int:
    lay_deps()
    rc = run_buf(["lint"])
    if rc == 0:
        print("protogen: buf lint (STANDARD + COMMENTS) passed")
    else:
        print(f"protogen: buf lint failed (exit {rc})", file=sys.stderr)
    return rc


def cmd_breaking(ns: argparse.Namespace) -> int:
    deps = lay_deps()
    ref = ns.against or released_ref()
    with tempfile.TemporaryDirectory(prefix="protogen-against-") as tmp:
        sync_tree(Path(tmp), against_tree(ref, deps))
        rc = run_buf(["breaking", "--against", tmp])
    if rc == 0:
        print(f"protogen: no breaking changes against {ref}")
    else:
        print(f"protogen: breaking changes against {ref} (exit {rc})", file=sys.stderr)
    return rc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gen", help="regenerate gen/accounts from protos/").set_defaults(func=cmd_gen)
    sub.add_parser("check", help="fail if gen/ is stale").set_defaults(func=cmd_check)
    sub.add_parser("deps", help="lay down build/proto-deps and build/proto-released").set_defaults(
        func=cmd_deps
    )
    sub.add_parser("lint", help="buf lint").set_defaults(func=cmd_lint)
    breaking = sub.add_parser("breaking", help="buf breaking against a git ref")
    breaking.add_argument("--against", help="git ref (default: the commit in protos/RELEASED)")
    breaking.set_defaults(func=cmd_breaking)
    ns = parser.parse_args(argv)
    return int(ns.func(ns))


if __name__ == "__main__":
    sys.exit(main())
