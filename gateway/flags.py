"""KServe's command-line flags, as an argparse parent parser, plus the gateway's own.

Nothing is parsed at import: `parser` only describes the flags. `ModelServer()` parses
``sys.argv`` for the settings it was not given, as KServe's does, so a KServe script that
builds ``ArgumentParser(parents=[model_server.parser])`` runs unchanged.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from gateway.hops.pool import BALANCERS, PoolTargetError, parse_target
from gateway.hops.settings import PROTOCOLS
from gateway.logs import FORMATS as LOG_FORMATS
from gateway.settings import MIB


def strtobool(value: str) -> bool:
    """KServe's boolean flag values: true/false, yes/no, on/off, 1/0."""
    lowered = value.strip().lower()
    if lowered in ("y", "yes", "t", "true", "on", "1"):
        return True
    if lowered in ("n", "no", "f", "false", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {value!r}")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: an integer of at least `minimum`."""

    def parse(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, not {number}")
        return number

    parse.__name__ = "int"  # argparse names the type in its "invalid int value" error
    return parse


def at_least_float(minimum: float) -> Callable[[str], float]:
    """An argparse `type`: a number of at least `minimum`."""

    def parse(value: str) -> float:
        number = float(value)
        if not number >= minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum:g} or more, not {value}")
        return number

    parse.__name__ = "float"
    return parse


def percent(value: str) -> float:
    """An argparse `type`: a share from 0 to 100."""
    number = float(value)
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"must be from 0 to 100, not {value}")
    return number


def pool_host(value: str) -> str:
    """An argparse `type`: ``host[:port]``, several separated by commas (a pool), checked
    now so that a typo stops the start with the entry named."""
    try:
        parse_target(value, default_port=80)
    except PoolTargetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        add_help=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    server = parser.add_argument_group("server (KServe flags)")
    server.add_argument("--http_port", default=8080, type=int, help="REST port")
    server.add_argument("--grpc_port", default=8081, type=int, help="gRPC port")
    server.add_argument("--workers", default=1, type=int, help="server processes sharing ports")
    server.add_argument("--max_threads", default=4, type=int, help="gRPC server threads")
    server.add_argument(
        "--max_asyncio_workers", default=None, type=int, help="threads for sync model code"
    )
    server.add_argument("--enable_grpc", default=True, type=strtobool, help="serve gRPC")
    server.add_argument("--enable_docs_url", default=False, type=strtobool, help="serve /docs")
    server.add_argument(
        "--enable_latency_logging", default=True, type=strtobool, help="log stage latencies"
    )
    server.add_argument("--configure_logging", default=True, type=strtobool, help="set up logging")
    server.add_argument("--log_config_file", default=None, help="logging config (JSON)")
    server.add_argument(
        "--log_format",
        default="plain",
        choices=LOG_FORMATS,
        help="log lines as text or one JSON object each (when --log_config_file is not given)",
    )
    server.add_argument("--access_log_format", default=None, help="access log line format")
    server.add_argument(
        "--event-loop",
        dest="event_loop",
        default="auto",
        choices=["auto", "asyncio", "uvloop"],
        help="event loop (auto: uvloop when installed)",
    )
    server.add_argument(
        "--timeout-keep-alive",
        dest="timeout_keep_alive",
        default=65,
        type=int,
        help="idle keep-alive seconds",
    )
    server.add_argument("--grpc_max_send_message_length", default=256 * MIB, type=int, help="bytes")
    server.add_argument(
        "--grpc_max_receive_message_length", default=256 * MIB, type=int, help="bytes"
    )
    server.add_argument(
        "--ssl_certfile", default=os.environ.get("KSERVE_TLS_CERT_FILE"), help="serve HTTPS"
    )
    server.add_argument("--ssl_keyfile", default=os.environ.get("KSERVE_TLS_KEY_FILE"))

    model = parser.add_argument_group("model (KServe flags)")
    model.add_argument("--model_name", default="model", help="model name on the endpoints")
    model.add_argument(
        "--predictor_host",
        default=None,
        type=pool_host,
        help="predictor HOST:PORT; several, comma-separated, or a name with several addresses: "
        "a pool of replicas",
    )
    model.add_argument("--protocol", default=None, choices=PROTOCOLS, help="deprecated alias")
    model.add_argument(
        "--predictor_protocol",
        default="auto",
        choices=PROTOCOLS,
        help="protocol spoken to the predictor; auto: asked of it (gRPC, REST v2, REST v1)",
    )
    model.add_argument("--predictor_use_ssl", default=False, type=strtobool)
    model.add_argument("--predictor_request_timeout_seconds", default=600, type=float)
    model.add_argument("--predictor_request_retries", default=0, type=int)
    model.add_argument(
        "--enable_predictor_health_check",
        action="store_true",
        help="ready only while the predictor is ready",
    )
    model.add_argument(
        "--explainer_host", default=None, type=pool_host, help="explainer HOST:PORT (or a pool)"
    )

    hops = parser.add_argument_group("hops (gateway)")
    hops.add_argument(
        "--predictor_rest_format",
        default="auto",
        choices=["auto", "json", "binary"],
        help="REST v2 body to the predictor; auto: binary only when the predictor's GET /v2 "
        "lists binary_tensor_data",
    )
    hops.add_argument(
        "--validate_inputs",
        default=True,
        type=strtobool,
        help="refuse requests whose inputs do not fit the predictor's model metadata",
    )
    hops.add_argument("--explainer_protocol", default="v1", choices=["v1", "v2"])
    hops.add_argument(
        "--explainer_request_retries",
        default=None,
        type=at_least(0),
        help="retries of a failed call to the explainer (default: --predictor_request_retries)",
    )
    hops.add_argument(
        "--forward_headers", default="", help="comma-separated inbound headers to pass on"
    )
    hops.add_argument(
        "--forward_authorization",
        default=False,
        type=strtobool,
        help="pass the client's Authorization header on to upstreams",
    )
    hops.add_argument("--predictor_ca_file", default=None, help="CA bundle for upstream TLS")
    hops.add_argument("--predictor_max_connections", default=100, type=int)
    hops.add_argument("--retry_backoff_initial", default=0.05, type=float, help="seconds")
    hops.add_argument("--retry_backoff_max", default=2.0, type=float, help="seconds")
    hops.add_argument(
        "--retry_on_timeout",
        default=False,
        type=strtobool,
        help="also retry calls that timed out (they may have run upstream)",
    )

    pools = parser.add_argument_group("pools (gateway): replicas behind a hop, docs/pools.md")
    pools.add_argument(
        "--balancer",
        default="least_request",
        choices=list(BALANCERS),
        help="how attempts are spread over a pool's replicas",
    )
    pools.add_argument(
        "--pool_max_in_flight",
        default=None,
        type=at_least(1),
        help="attempts in flight per pool (per process) past which 503 + Retry-After at once",
    )
    pools.add_argument(
        "--outlier_consecutive_failures",
        default=5,
        type=at_least(0),
        help="connect failures or 502/503/504 in a row that eject a replica (0: never)",
    )
    pools.add_argument(
        "--outlier_base_ejection_seconds",
        default=30.0,
        type=at_least_float(0.001),
        help="first ejection's length; each further one is longer (up to 10x)",
    )
    pools.add_argument(
        "--outlier_max_ejection_percent",
        default=10.0,
        type=percent,
        help="share of a pool ejected at once (at least one replica)",
    )
    pools.add_argument(
        "--health_check_interval",
        default=0.0,
        type=at_least_float(0),
        help="seconds between active health checks of each replica (0: passive only)",
    )
    pools.add_argument(
        "--dns_refresh_seconds",
        default=5.0,
        type=at_least_float(0.01),
        help="how often pool names are resolved again",
    )
    pools.add_argument(
        "--retry_budget_percent",
        default=20.0,
        type=percent,
        help="retries in flight, as a share of the requests in flight (whole process), "
        "as Envoy's default; 100: no cap",
    )
    pools.add_argument(
        "--min_retry_concurrency",
        default=3,
        type=at_least(0),
        help="retries allowed in flight whatever the share (so a lone request still retries)",
    )
    pools.add_argument(
        "--predictor_shadow_host",
        default=None,
        type=pool_host,
        help="a pool that gets a copy of sampled predictor requests; its answers are "
        "compared and discarded",
    )
    pools.add_argument(
        "--shadow_percent",
        default=100.0,
        type=percent,
        help="share of requests copied to --predictor_shadow_host",
    )

    gateway = parser.add_argument_group("gateway")
    gateway.add_argument(
        "--listen_address", default="0.0.0.0", help="address the servers listen on"
    )
    gateway.add_argument("--grace_period", default=30, type=float, help="seconds to drain")
    gateway.add_argument(
        "--max_request_bytes", default=256 * MIB, type=int, help="largest REST body"
    )
    gateway.add_argument(
        "--max_concurrency",
        default=None,
        type=int,
        help="inference requests in flight per process; more are refused with 503 at once",
    )
    gateway.add_argument(
        "--request_body_timeout", default=60, type=float, help="seconds to receive a body"
    )
    gateway.add_argument(
        "--trace_buffer",
        default=0,
        type=at_least(0),
        help="keep this process's last N traces in memory, shown at /traces (0: off)",
    )
    return parser


parser = build_parser()
