#!/usr/bin/env python3
"""Regenerate gateway/_proto from protos/grpc_predict_v2.proto.

protoc's Python output is adjusted in two ways:

- its messages live in a private descriptor pool, because tritonclient and kserve register the
  same ``inference.*`` names in the default pool and both may be imported beside us;
- the gencode/runtime version check is dropped, so the code runs on every protobuf release
  that has ``google.protobuf.internal.builder`` (4.21 and later), not only on the one that
  generated it.

The gRPC service is wired by hand in ``gateway.server.grpc`` and ``gateway.hops.grpc`` from the
service descriptor, so no ``_pb2_grpc`` module is generated.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "protos" / "grpc_predict_v2.proto"
OUT = ROOT / "gateway" / "_proto"
MODULE = "gateway._proto.grpc_predict_v2_pb2"


def _adjust(source: str) -> str:
    source = source.replace(
        "# NO CHECKED-IN PROTOBUF GENCODE\n",
        "# Adjusted by scripts/gen_protos.py: private descriptor pool, no runtime version pin.\n",
    )
    source = source.replace("from google.protobuf import runtime_version as _runtime_version\n", "")
    source = re.sub(
        r"_runtime_version\.ValidateProtobufRuntimeVersion\(.*?\)\n", "", source, flags=re.S
    )
    source = source.replace(
        "_sym_db = _symbol_database.Default()",
        "# Private pool: tritonclient and kserve register the same inference.* names.\n"
        "_POOL = _descriptor_pool.DescriptorPool()",
    )
    source = source.replace(
        "_descriptor_pool.Default().AddSerializedFile(", "_POOL.AddSerializedFile("
    )
    source = source.replace("'grpc_predict_v2_pb2', _globals", f"'{MODULE}', _globals")
    if "_POOL.AddSerializedFile(" not in source or "_runtime_version" in source:
        raise SystemExit("protoc output changed shape; update scripts/gen_protos.py")
    return source


def generate(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO.parent}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                str(PROTO),
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        py = (Path(tmp) / "grpc_predict_v2_pb2.py").read_text()
        pyi = (Path(tmp) / "grpc_predict_v2_pb2.pyi").read_text()
    out.mkdir(parents=True, exist_ok=True)
    (out / "grpc_predict_v2_pb2.py").write_text(_adjust(py))
    (out / "grpc_predict_v2_pb2.pyi").write_text(pyi)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
