"""The .proto files are the single source: generated code is fresh and every element documented."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTOS = REPO / "protos"
SDK_SRC = REPO / "sdk" / "src"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _generated_files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and path.name.endswith(GENERATED)
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    shutil.copytree(PROTOS, tmp_path / "protos", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (tmp_path / "sdk").mkdir()
    shutil.copytree(SDK_SRC / "talos", tmp_path / "sdk" / "src" / "talos")
    for path in list((tmp_path / "protos").rglob("*")) + list((tmp_path / "sdk").rglob("*")):
        if path.is_file() and path.name.endswith(GENERATED):
            path.unlink()
    subprocess.run([sys.executable, str(tmp_path / "protos" / "generate.py")], check=True)
    for committed_root, fresh_root in ((PROTOS, tmp_path / "protos"), (SDK_SRC, tmp_path / "sdk" / "src")):
        committed = _generated_files(committed_root)
        fresh = _generated_files(fresh_root)
        assert committed.keys() == fresh.keys(), "generated files differ: run `make protos`"
        stale = [name for name in committed if committed[name] != fresh[name]]
        assert not stale, f"stale generated code (run `make protos`): {stale}"


_ELEMENT = re.compile(
    r"^\s*(message|service|enum|rpc|oneof)\s|^\s*(repeated\s+|optional\s+)?[\w.<>, ]+\s+\w+\s*=\s*\d+;"
)


def test_every_message_and_field_has_a_comment() -> None:
    undocumented = []
    checked = 0
    for proto in sorted(PROTOS.glob("talos/**/*.proto")):
        lines = proto.read_text().splitlines()
        for number, line in enumerate(lines):
            if _ELEMENT.match(line):
                checked += 1
            if _ELEMENT.match(line) and not lines[number - 1].strip().startswith("//"):
                undocumented.append(f"{proto.relative_to(REPO)}:{number + 1}: {line.strip()}")
    assert checked > 100, f"only {checked} proto elements recognised"
    assert not undocumented, "\n".join(undocumented)


def test_proto_package_matches_folder() -> None:
    for proto in PROTOS.glob("talos/**/*.proto"):
        package = re.search(r"^package ([\w.]+);", proto.read_text(), re.M)
        assert package, proto
        assert package.group(1) == ".".join(proto.parent.relative_to(PROTOS).parts)
