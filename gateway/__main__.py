"""The ``gateway`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np

from gateway import InferInput, InferRequest, __version__


def _demo(_: argparse.Namespace) -> int:
    # Until the servers land, the demo shows one request crossing every wire format losslessly.
    tensor = InferInput("features", [2, 3], "FP32")
    tensor.set_data_from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))
    request = InferRequest("demo", [tensor], request_id="1", parameters={"scale": 0.5})
    body, json_length = request.to_rest()
    assert isinstance(body, bytes)
    via_rest = InferRequest.from_bytes(body, json_length, "demo")
    via_grpc = InferRequest.from_grpc_bytes(via_rest.to_grpc_bytes())
    print(f"gateway {__version__}")
    print(f"REST binary body: {len(body)} bytes ({json_length} of JSON)")
    print(f"after REST -> gRPC: {via_grpc.inputs[0].as_numpy().tolist()}")
    print(f"parameters kept: {via_grpc.parameters}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the built-in demo")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
