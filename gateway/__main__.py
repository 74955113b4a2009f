"""The ``gateway`` command: ``serve`` one gateway, run the ``demo``, or show a ``trace``."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway import trace_cli
from gateway.demo import cli as demo_cli
from gateway.flags import parser as kserve_flags
from gateway.model import Model
from gateway.version import __version__


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
    demo_cli.add_parser(commands)
    trace_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        # KServe starts a transformer container with only its flags: that means `serve`.
        argv.insert(0, "serve")
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        if args.command != "serve":
            parser.parse_args(argv)  # exits, naming what it does not know
        # KServe adds flags between releases: a transformer container that refused one
        # would crash-loop, so `serve` goes on without it, as KServe's own server does.
        print(f"gateway: warning: ignoring unknown flags: {' '.join(unknown)}", file=sys.stderr)
    try:
        return int(args.run(args))
    except (ValueError, ImportError) as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
