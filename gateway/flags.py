"""KServe's command-line flags, as an argparse parent parser, plus the gateway's own.

Nothing is parsed at import: `parser` only describes the flags. `ModelServer()` parses
``sys.argv`` for the settings it was not given, as KServe's does, so a KServe script that
builds ``ArgumentParser(parents=[model_server.parser])`` runs unchanged. What a flag's value
may be is `gateway.flag_types`'.
"""

from __future__ import annotations

import argparse
import os

from gateway.flag_types import HelpFormatter, at_least, at_least_float, percent, strtobool
from gateway.hops.pool import BALANCERS
from gateway.hops.settings import PROTOCOLS
from gateway.logs import FORMATS as LOG_FORMATS
from gateway.settings import MIB, ServerSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False, formatter_class=HelpFormatter)
    server = parser.add_argument_group("server (KServe flags)")
    server.add_argument("--http_port", default=8080, type=int, help="REST port (0: any free one)")
    server.add_argument("--grpc_port", default=8081, type=int, help="gRPC port (0: any free one)")
    server.add_argument("--workers", default=1, type=int, help="server processes sharing ports")
    server.add_argument("--max_threads", default=4, type=int, help="gRPC server threads")
    server.add_argument(
        "--max_asyncio_workers",
        default=None,
        type=int,
        help="threads for sync model code (default: CPUs + 4, at most 32)",
    )
    server.add_argument("--enable_grpc", default=True, type=strtobool, help="serve gRPC")
    server.add_argument("--enable_docs_url", default=False, type=strtobool, help="serve /docs")
    server.add_argument(
        "--enable_latency_logging", default=True, type=strtobool, help="log stage latencies"
    )
    server.add_argument("--configure_logging", default=True, type=strtobool, help="set up logging")
    server.add_argument(
        "--log_config_file",
        default=None,
        help="logging config, JSON for logging.config (default: lines on stderr, see --log_format)",
    )
    server.add_argument(
        "--log_format",
        default="plain",
        choices=LOG_FORMATS,
        help="log lines as text or one JSON object each (when --log_config_file is not given)",
    )
    server.add_argument(
        "--access_log_format",
        default=None,
        help="REST access line format, gunicorn or aiohttp style (default: Apache-like)",
    )
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
    server.add_argument(
        "--grpc_max_send_message_length",
        default=256 * MIB,
        type=int,
        help="largest gRPC message sent, bytes",
    )
    server.add_argument(
        "--grpc_max_receive_message_length",
        default=256 * MIB,
        type=int,
        help="largest gRPC message received, bytes",
    )
    server.add_argument(
        "--ssl_certfile",
        default=os.environ.get("KSERVE_TLS_CERT_FILE"),
        help="serve REST over HTTPS with this certificate, with --ssl_keyfile "
        "(default: $KSERVE_TLS_CERT_FILE, else plain HTTP)",
    )
    server.add_argument(
        "--ssl_keyfile",
        default=os.environ.get("KSERVE_TLS_KEY_FILE"),
        help="the private key of --ssl_certfile (default: $KSERVE_TLS_KEY_FILE)",
    )

    model = parser.add_argument_group("model (KServe flags)")
    model.add_argument("--model_name", default="model", help="model name on the endpoints")
    model.add_argument(
        "--predictor_host",
        default=None,
        help="where requests go, HOST:PORT; several, comma-separated, or a name with several "
        "addresses: a pool of replicas (default: nowhere; inference answers 501 unless the "
        "model has a predict of its own)",
    )
    model.add_argument(
        "--protocol",
        default=None,
        choices=PROTOCOLS,
        help="deprecated alias of --predictor_protocol",
    )
    model.add_argument(
        "--predictor_protocol",
        default="auto",
        choices=PROTOCOLS,
        help="what the predictor speaks: KServe v1 REST, v2 REST, v2 gRPC; auto: asked of it "
        "(gRPC, REST v2, REST v1)",
    )
    model.add_argument(
        "--predictor_use_ssl",
        default=False,
        type=strtobool,
        help="reach the predictor and explainer over TLS (verified)",
    )
    model.add_argument(
        "--predictor_request_timeout_seconds",
        default=600,
        type=float,
        help="seconds one call to the predictor or explainer may take",
    )
    model.add_argument(
        "--predictor_request_retries",
        default=0,
        type=int,
        help="retries of a call to the predictor that failed where retrying is safe",
    )
    model.add_argument(
        "--enable_predictor_health_check",
        action="store_true",
        help="ready only while the predictor is ready",
    )
    model.add_argument(
        "--explainer_host",
        default=None,
        help="where :explain requests go, HOST:PORT or a pool (default: nowhere; they answer 501)",
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
    hops.add_argument(
        "--explainer_protocol",
        default="v1",
        choices=["v1", "v2"],
        help="what the explainer speaks: KServe v1 REST or v2 REST",
    )
    hops.add_argument(
        "--explainer_request_retries",
        default=None,
        type=at_least(0),
        help="retries of a failed call to the explainer (default: as --predictor_request_retries)",
    )
    hops.add_argument(
        "--forward_headers",
        default="",
        help="comma-separated inbound headers to pass on (default: none besides x-request-id "
        "and trace context, which always go)",
    )
    hops.add_argument(
        "--forward_authorization",
        default=False,
        type=strtobool,
        help="pass the client's Authorization header on to upstreams",
    )
    hops.add_argument(
        "--predictor_ca_file",
        default=None,
        help="CA bundle to verify upstream TLS with (default: the system's)",
    )
    hops.add_argument(
        "--predictor_max_connections",
        default=100,
        type=int,
        help="connections kept open to each REST upstream",
    )
    hops.add_argument(
        "--retry_backoff_initial",
        default=0.05,
        type=float,
        help="seconds before the first retry (then doubling, with jitter)",
    )
    hops.add_argument(
        "--retry_backoff_max", default=2.0, type=float, help="longest wait between retries, s"
    )
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
        "--listen_address",
        default="0.0.0.0",
        help="address both servers listen on (0.0.0.0: every interface)",
    )
    gateway.add_argument(
        "--grace_period", default=30, type=float, help="seconds to finish requests on SIGTERM"
    )
    gateway.add_argument(
        "--max_request_bytes", default=256 * MIB, type=int, help="largest REST body, bytes"
    )
    gateway.add_argument(
        "--max_concurrency",
        default=None,
        type=int,
        help="inference requests in flight per process; more are refused with 503 at once "
        "(default: no limit)",
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
    _add_hostile_client_flags(gateway)
    return parser


def _add_hostile_client_flags(group: argparse._ArgumentGroup) -> None:
    """What bounds one client's (or upstream's) hold on the server: decode limits, slow
    readers, connections, upstream answers."""
    limits = ServerSettings()
    group.add_argument(
        "--max_json_bytes",
        default=limits.max_json_bytes,
        type=at_least(1),
        help="largest JSON text in a REST request (413 past it)",
    )
    group.add_argument(
        "--max_request_values",
        default=limits.max_request_values,
        type=at_least(1),
        help="JSON values, BYTES elements and gRPC typed values in one request (413 past it)",
    )
    group.add_argument(
        "--max_request_keys",
        default=limits.max_request_keys,
        type=at_least(1),
        help="JSON object members in one request (413 past it)",
    )
    group.add_argument(
        "--grpc_max_parsed_bytes",
        default=limits.grpc_max_parsed_bytes,
        type=at_least(1),
        help="bytes of a gRPC request besides its raw contents (RESOURCE_EXHAUSTED past it)",
    )
    group.add_argument(
        "--write_timeout",
        default=limits.write_timeout,
        type=float,
        help="seconds a REST client may leave its answer unread before it is disconnected",
    )
    group.add_argument(
        "--max_write_buffer",
        default=limits.max_write_buffer,
        type=at_least(1),
        help="bytes of an answer queued for one REST client at once",
    )
    group.add_argument(
        "--max_connections",
        default=None,
        type=at_least(1),
        help="REST client connections at once, more are closed at once (default: from the "
        "descriptor limit, keeping a quarter of it for upstreams and files)",
    )
    group.add_argument(
        "--max_upstream_response_bytes",
        default=256 * MIB,
        type=at_least(1),
        help="largest answer taken from a predictor or explainer, REST or gRPC (502 past it)",
    )


parser = build_parser()
