"""The committed generated code matches the .proto, and coexists with other inference.* code."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

from gateway._proto import SERVICE_NAME, pb

ROOT = Path(__file__).resolve().parent.parent


def _compiled_descriptor() -> descriptor_pb2.FileDescriptorProto:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        proto_dir = ROOT / "protos"
        args = [
            "protoc",
            f"-I{proto_dir}",
            f"--descriptor_set_out={out}",
            str(proto_dir / "grpc_predict_v2.proto"),
        ]
        assert protoc.main(args) == 0
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    descriptor = files.file[0]
    # protoc records json_name in descriptor sets but not in Python code; it is derived anyway.
    messages = list(descriptor.message_type)
    while messages:
        message = messages.pop()
        messages.extend(message.nested_type)
        for field in message.field:
            field.ClearField("json_name")
    return descriptor


def test_committed_code_matches_the_proto() -> None:
    committed = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(committed)
    fresh = _compiled_descriptor()
    assert committed == fresh, "gateway/_proto is stale: run scripts/gen_protos.py"


def test_committed_stub_matches_a_fresh_generation() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), tmp], check=True)
        fresh = (Path(tmp) / "grpc_predict_v2_pb2.pyi").read_text()
    committed = (ROOT / "gateway" / "_proto" / "grpc_predict_v2_pb2.pyi").read_text()
    assert committed == fresh, "gateway/_proto stubs are stale: run scripts/gen_protos.py"


def test_service_keeps_the_protocol_name() -> None:
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == SERVICE_NAME
    assert {m.name for m in service.methods} >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
    choices = {
        f.name for f in pb.InferParameter.DESCRIPTOR.oneofs_by_name["parameter_choice"].fields
    }
    assert choices == {"bool_param", "int64_param", "string_param", "double_param", "uint64_param"}


_TOGETHER = """
import sys
first, second = sys.argv[1:3]
import importlib
importlib.import_module(first)
importlib.import_module(second)
from gateway._proto import pb
from tritonclient.grpc import service_pb2 as triton
ours = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\\x01\\x02"])
ours.parameters["scale"].double_param = 0.5
theirs = triton.ModelInferRequest.FromString(ours.SerializeToString())
assert theirs.model_name == "m" and theirs.parameters["scale"].double_param == 0.5
assert pb.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"
print("ok")
"""


def test_gateway_and_tritonclient_import_together_in_either_order() -> None:
    # A fresh interpreter each time: the descriptor pool is process-wide.
    for order in (("tritonclient.grpc", "gateway"), ("gateway", "tritonclient.grpc")):
        result = subprocess.run(
            [sys.executable, "-c", _TOGETHER, *order], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok"


def test_generated_code_runs_on_the_pure_python_protobuf() -> None:
    code = (
        "from gateway._proto import pb;"
        "m = pb.ModelInferRequest(model_name='x');"
        "m.parameters['k'].uint64_param = 2**64 - 1;"
        "assert pb.ModelInferRequest.FromString(m.SerializeToString()) == m;"
        "from google.protobuf.internal import api_implementation;"
        "print(api_implementation.Type())"
    )
    env = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}
    import os

    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python"
