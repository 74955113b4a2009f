"""The ``gateway`` command: ``serve`` one gateway, or run the ``demo``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gateway import InferInput, InferRequest, __version__
from gateway.flags import parser as kserve_flags
from gateway.model import Model


class IdentityTransformer(Model):
    """Forwards every request to the predictor unchanged (the default transformer)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True


def load_transformer(spec: str) -> type[Model]:
    """The `Model` subclass named by ``FILE.py:Class`` or ``module:Class``."""
    location, _, class_name = spec.rpartition(":")
    if not location or not class_name:
        raise ValueError(f"--transformer must be FILE.py:Class or module:Class, got {spec!r}")
    if location.endswith(".py"):
        path = Path(location)
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        if module_spec is None or module_spec.loader is None or not path.is_file():
            raise ValueError(f"cannot load {location}: no such file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[path.stem] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(location)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise ValueError(f"{spec} is not a gateway Model subclass")
    return cls


def _serve(args: argparse.Namespace) -> int:
    from gateway.model_server import ModelServer

    cls: type[Model] = IdentityTransformer
    if args.transformer:
        cls = load_transformer(args.transformer)
    model: Any = cls(args.model_name)
    ModelServer(args=args).start([model])
    return 0


def _demo(_: argparse.Namespace) -> int:
    # Until the multi-hop demo lands, the demo shows one request crossing every wire format.
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
    serve = commands.add_parser(
        "serve",
        parents=[kserve_flags],
        help="run one gateway in front of a predictor",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument(
        "--transformer",
        default=None,
        help="your Model subclass, as FILE.py:Class or module:Class (default: identity)",
    )
    serve.set_defaults(run=_serve)
    demo = commands.add_parser("demo", help="run the built-in demo")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, ImportError) as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
