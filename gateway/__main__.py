"""The ``gateway`` command: ``serve`` one gateway, run the ``demo``, or show a ``trace``."""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.flag_types import HelpFormatter
from gateway.flags import parser as kserve_flags
from gateway.model import Model
from gateway.preflight import StartupError
from gateway.version import __version__

DESCRIPTION = "Serve one gateway, run the demo, or show the traces of running gateways."


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
    if isinstance(cls, type) and issubclass(cls, Model):
        return cls
    found = [
        name
        for name, value in vars(module).items()
        if isinstance(value, type)
        and issubclass(value, Model)
        and value.__module__ == module.__name__
    ]
    if cls is None:
        problem = f"{location} has no {class_name!r}"
    else:
        problem = f"{class_name!r} in {location} is not a gateway Model subclass"
    offer = f"its Model subclasses: {', '.join(found)}" if found else "it defines none"
    raise ValueError(f"{problem}; {offer}")


def _serve(args: argparse.Namespace) -> int:
    from gateway.model_server import ModelServer

    cls: type[Model] = IdentityTransformer
    if args.transformer:
        cls = load_transformer(args.transformer)
    name, options = args.model_name, dict[str, Any]()
    if args.graph:
        args, options = _graph(args)
        name = options["root_model"]
    model: Any = cls(name)
    ModelServer(args=args, **options).start([model])
    return 0


def _graph(args: argparse.Namespace) -> tuple[argparse.Namespace, dict[str, Any]]:
    """The flags and ModelServer options that serve the graph ``--graph`` names: a model
    named after the graph whose predictor is the graph, answering ``POST /`` too."""
    from gateway import graph_wiring
    from gateway.wiring import Upstreams

    spec = graph_wiring.load(args)
    args = graph_wiring.server_flags(args, spec)
    return args, {"upstreams": Upstreams.from_flags(args, spec), "root_model": spec.name}


def build_parser(serve_only: bool = False) -> argparse.ArgumentParser:
    """The CLI; `serve_only` leaves out the other commands, whose tooling a gateway that
    serves never imports."""
    parser = argparse.ArgumentParser(prog="gateway", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        parents=[kserve_flags],
        help="run one gateway in front of a predictor",
        description="Run one gateway: REST and gRPC servers for the model, forwarding to the "
        "predictor. Flags it does not know are ignored with a warning, as KServe's are.",
        formatter_class=HelpFormatter,
    )
    serve.add_argument(
        "--transformer",
        default=None,
        help="your Model subclass, as FILE.py:Class or module:Class (default: identity)",
    )
    serve.add_argument(
        "--graph",
        default=None,
        metavar="FILE",
        help="serve this KServe InferenceGraph (YAML or JSON) at / and as the model it names, "
        "instead of one predictor",
    )
    serve.add_argument(
        "--service",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="where a graph step's serviceName is, as KServe would put it in serviceUrl "
        "(http://HOST:PORT/v1/models/M:predict, .../v2/models/M/infer, grpc://HOST:PORT/M); "
        "repeatable",
    )
    serve.set_defaults(run=_serve)
    if not serve_only:
        from gateway import trace_cli
        from gateway.demo import cli as demo_cli

        demo_cli.add_parser(commands)
        trace_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        # KServe starts a transformer container with only its flags: that means `serve`.
        argv.insert(0, "serve")
    parser = build_parser(serve_only=argv[:1] == ["serve"])
    args, unknown = parser.parse_known_args(argv)
    command = _subparser(parser, args.command)
    messages = unknown_flags(command, unknown)
    if args.command != "serve" and unknown:
        command.error("; ".join(messages) or f"unrecognized arguments: {' '.join(unknown)}")
    for message in messages:
        # KServe ignores flags it does not know (a container's args are appended to): so
        # does `serve`, saying so.
        print(f"gateway serve: warning: {message}; ignored", file=sys.stderr)
    try:
        return int(args.run(args))
    except (ValueError, ImportError, StartupError) as exc:
        print(f"gateway: error: {exc}", file=sys.stderr)
        return 2


def unknown_flags(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> list[str]:
    """One message per word of `unknown` that is a flag, naming the nearest known flag; the
    other words are values of those flags."""
    known = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    messages = []
    for word in unknown:
        if not word.startswith("-"):
            continue
        flag = word.split("=", 1)[0]
        stem = flag.lstrip("-")
        # --predictor-host for --predictor_host (and the other way round) is no typo to guess.
        spelt = [f"--{stem.replace('-', '_')}", f"--{stem.replace('_', '-')}"]
        near = [f for f in spelt if f in known] or difflib.get_close_matches(flag, known, 1, 0.6)
        hint = f" (did you mean {near[0]}?)" if near else ""
        messages.append(f"unknown flag {flag}{hint}")
    return messages


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    return parser


if __name__ == "__main__":
    sys.exit(main())
