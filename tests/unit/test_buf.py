"""buf as its users run it, from the checkout and offline (buf.yaml names build/proto-deps,
which `make proto-deps` lays down): lint and build are clean, and nothing breaks the
released contract (protos/RELEASED), while a removed or renumbered field does, shown on
a temporary copy. The README's include paths and buf.gen.yaml generate clients."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"
MARKER = ROOT / "protos" / "RELEASED"
RELEASED = ROOT / "build" / "proto-released"

# A change to a temporary copy of account.proto, and what buf breaking says of it.
BREAKS = {
    "removed": (r"^\s*string logo_url = 8 .*\n", "", 'field "8" with name "logo_url"'),
    "renumbered": (
        r"string primary_color = 6 ",
        "string primary_color = 66 ",
        'field "6" with name "primary_color"',
    ),
}


def _run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def _buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return _run([str(BUF), *args], cwd)


@pytest.fixture(scope="module", autouse=True)
def proto_deps() -> None:
    """build/proto-deps and build/proto-released, as `make proto-deps` lays them down."""
    result = _run([sys.executable, "scripts/protogen.py", "deps"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A copy of the checkout's buf workspace, to change protos in."""
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "build" / "proto-deps", tmp_path / "build" / "proto-deps")
    shutil.copy(ROOT / "buf.yaml", tmp_path)
    return tmp_path


def _proto_files(*roots: str) -> list[str]:
    files = (p for root in roots for p in (ROOT / root).rglob("*.proto"))
    return sorted(p.relative_to(ROOT).as_posix() for p in files)


def test_buf_build_is_clean() -> None:
    result = _buf("build")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_is_clean() -> None:
    result = _buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_covers_our_protos(workspace: Path) -> None:
    """The deps module is exempt from lint, protos/ is not."""
    with (workspace / "protos" / "accounts" / "v1" / "account.proto").open("a") as proto:
        proto.write("message lower_case {}\n")
    result = _buf("lint", cwd=workspace)
    assert result.returncode != 0
    assert "accounts/v1/account.proto" in result.stdout
    assert "lower_case" in result.stdout


def test_released_marker_is_a_commit_of_this_history() -> None:
    ref = MARKER.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{MARKER} should hold one commit hash"
    assert _run(["git", "merge-base", "--is-ancestor", ref, "HEAD"]).returncode == 0


def test_no_breaking_change_against_the_released_contract() -> None:
    result = _buf("breaking", "--against", str(RELEASED.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_protogen_breaking_reads_a_commit() -> None:
    result = _run([sys.executable, "scripts/protogen.py", "breaking", "--against", "HEAD"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("change", sorted(BREAKS))
def test_breaking_fails_on_a_changed_field(workspace: Path, change: str) -> None:
    pattern, replacement, complaint = BREAKS[change]
    proto = workspace / "protos" / "accounts" / "v1" / "account.proto"
    text, count = re.subn(pattern, replacement, proto.read_text(), flags=re.MULTILINE)
    assert count == 1, f"account.proto changed: {pattern!r} no longer matches once"
    proto.write_text(text)
    assert _buf("build", cwd=workspace).returncode == 0  # still valid, only incompatible
    result = _buf("breaking", "--against", str(RELEASED), cwd=workspace)
    assert result.returncode != 0
    assert complaint in result.stdout and "was deleted" in result.stdout, result.stdout


def test_readme_protoc_include_paths_generate_gen(tmp_path: Path) -> None:
    """grpcio-tools with the README's include paths into a fresh directory: no
    "google/api/field_behavior.proto: File not found", and gen/'s code byte for byte."""
    result = _run([
        sys.executable, "-m", "grpc_tools.protoc", "-I", "protos", "-I", "build/proto-deps",
        f"--python_out={tmp_path}", f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}",
        *_proto_files("protos"),
    ])
    assert result.returncode == 0, result.stdout + result.stderr
    generated = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*.py*")}
    assert len(generated) == 3 * len(_proto_files("protos"))
    assert generated == {rel: (ROOT / "gen" / rel).read_bytes() for rel in generated}


def test_buf_generate_writes_python_and_typescript(tmp_path: Path) -> None:
    """buf.gen.yaml, offline: Python messages (their .pyi as gen/ has them) and the
    protoc-gen-es client with the google/api files it imports."""
    result = _buf("generate", "--output", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    python, ts = tmp_path / "build" / "clients" / "python", tmp_path / "build" / "clients" / "ts"
    stems = {Path(f).stem for f in _proto_files("protos")}
    assert {p.name for p in python.rglob("*.py")} == {f"{s}_pb2.py" for s in stems}
    for pyi in python.rglob("*.pyi"):
        assert pyi.read_bytes() == (ROOT / "gen" / pyi.relative_to(python)).read_bytes()
    deps = {f"google/api/{Path(f).stem}_pb.js" for f in _proto_files("build/proto-deps")}
    ours = {f"accounts/v1/{s}_pb.js" for s in stems}
    assert {p.relative_to(ts).as_posix() for p in ts.rglob("*.js")} == ours | deps
