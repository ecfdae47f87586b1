"""Regenerates the Python code for every .proto file (run by `make protos`).

The proto package path is the folder path and the Python import path, so the generated
imports (`from talos.billing.v1 import billing_pb2`) need no rewriting. The public API
(`talos/api/`) is generated into the SDK, which ships it to integrators; the internal
contracts are generated beside their .proto files and installed as `talos-protos`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO = PROTO_ROOT.parent
SDK_OUT = REPO / "sdk" / "src"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def _outputs_for(proto: Path) -> Path:
    relative = proto.relative_to(PROTO_ROOT)
    return SDK_OUT if relative.parts[1] == "api" else PROTO_ROOT


def _clean(out_root: Path, package_dir: Path) -> None:
    target = out_root / package_dir
    if target.is_dir():
        for path in target.iterdir():
            if path.name.endswith(GENERATED_SUFFIXES):
                path.unlink()


def main() -> int:
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(PROTO_ROOT.glob("talos/**/*.proto"))
    if not protos:
        print("no .proto files found", file=sys.stderr)
        return 1
    for proto in protos:
        _clean(_outputs_for(proto), proto.parent.relative_to(PROTO_ROOT))
    for proto in protos:
        out = _outputs_for(proto)
        out.joinpath(proto.parent.relative_to(PROTO_ROOT)).mkdir(parents=True, exist_ok=True)
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(proto.relative_to(PROTO_ROOT)),
        ]
        if protoc.main(args) != 0:
            print(f"protoc failed on {proto}", file=sys.stderr)
            return 1
    # Drop the byte-code protoc's imports may leave behind, so `git status` stays clean.
    for cache in list(PROTO_ROOT.rglob("__pycache__")) + list(SDK_OUT.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)
    print(f"generated code for {len(protos)} proto files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
