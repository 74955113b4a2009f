"""Exporters from the standard variables, against real collectors on loopback: OTLP over gRPC
(a grpc.aio TraceService) and over HTTP, their endpoint, headers and TLS variables read by the
exporters, the console exporter, the README's commands as real processes, and nothing
imported or started for exporting when tracing is off."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway import tracing
from gateway.tracing import TracingSettings
from tests.hops.upstreams import make_authority
from tests.otlp_grpc import grpc_collector
from tests.server.procs import ROOT, run_server

README = (ROOT / "README.md").read_text()
BODY = {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}


async def export_one(name: str = "exported") -> None:
    """One span through a provider built from the process environment, flushed and shut."""
    provider = tracing.tracer_provider(TracingSettings.from_env(os.environ))
    assert provider is not None
    provider.get_tracer("test").start_span(name).end()
    # The exporter sends from its own thread; the loop must keep serving the collector.
    assert await asyncio.to_thread(provider.force_flush, 10_000)
    await asyncio.to_thread(provider.shutdown)


async def test_otlp_over_grpc_reaches_a_collector_with_the_headers_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with grpc_collector() as (collector, port):
        monkeypatch.setenv("OTEL_SERVICE_NAME", "tx")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Bearer%20t0k")
        await export_one()
    (span,) = collector.spans()
    assert (span.service, span.name) == ("tx", "exported")
    assert collector.metadata[0]["x-tenant"] == "acme"
    assert collector.metadata[0]["authorization"] == "Bearer t0k"


async def test_the_traces_variables_override_the_generic_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with grpc_collector() as (collector, port):
        # The generic ones point at an HTTP collector that is not there.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-signal=traces")
        await export_one()
    assert [span.name for span in collector.spans()] == ["exported"]
    assert collector.metadata[0]["x-signal"] == "traces"


async def test_otlp_over_grpc_with_tls_trusts_the_certificate_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    authority = make_authority(tmp_path)
    async with grpc_collector(authority.grpc_credentials()) as (collector, port):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"https://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_CERTIFICATE", authority.ca_file)
        await export_one("over tls")
    assert [span.name for span in collector.spans()] == ["over tls"]


@asynccontextmanager
async def http_collector() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    """An OTLP/HTTP collector on loopback: its base URL, and (path, headers, body) received."""
    received: list[tuple[str, dict[str, str], bytes]] = []

    async def collect(request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        received.append((request.path, headers, await request.read()))
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/{path:.*}", collect)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield f"http://127.0.0.1:{server.port}", received


async def test_otlp_over_http_puts_traces_under_the_base_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with http_collector() as (base, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
        await export_one()
    ((path, headers, body),) = received
    assert path == "/v1/traces"
    assert headers["x-tenant"] == "acme"
    (resource_spans,) = ExportTraceServiceRequest.FromString(body).resource_spans
    assert [span.name for span in resource_spans.scope_spans[0].spans] == ["exported"]


def test_the_console_exporter_prints_each_span() -> None:
    code = (
        "from gateway import tracing\n"
        "tracing.configure_tracing().start_span('printed').end()\n"
    )  # the provider flushes its spans when the process exits
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "tx"}
    result = python(code, env)
    assert result.returncode == 0, result.stderr
    printed = result.stdout
    assert '"name": "printed"' in printed
    assert '"service.name": "tx"' in printed


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_tracing_off_imports_and_starts_nothing_for_exporting() -> None:
    code = (
        "import sys, threading\n"
        "from gateway import model_server, tracing\n"
        "assert tracing.configure_tracing() is None\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.exporter',"
        " 'opentelemetry.propagate', 'gateway.tracing_export', 'requests'))]\n"
        "print(sorted(loaded), threading.active_count())\n"
    )
    result = python(code, {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "1"]


def test_a_propagator_that_is_not_installed_stops_the_start() -> None:
    code = "from gateway import tracing\ntracing.configure_tracing()\n"
    env = {**os.environ, "OTEL_TRACES_EXPORTER": "console", "OTEL_PROPAGATORS": "b3,zipkinn"}
    result = python(code, env)
    assert result.returncode != 0
    assert "Propagator zipkinn not found" in result.stderr


# The README's commands, run as shown against collectors on loopback


def readme_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("OTEL_")]


async def echo_predictor(request: web.Request) -> web.Response:
    """A v2 predictor answering every request (JSON or binary) with one small tensor."""
    await request.read()
    output = {"name": "y", "shape": [1], "datatype": "FP32", "data": [1.0]}
    return web.json_response({"model_name": request.match_info["name"], "outputs": [output]})


@pytest.mark.parametrize("command", readme_commands())
async def test_the_readme_points_the_gateway_at_a_collector(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    words = shlex.split(command)
    env = dict(word.split("=", 1) for word in words if re.fullmatch(r"OTEL_\w+=.*", word))
    args = [word for word in words if not re.fullmatch(r"OTEL_\w+=.*", word)]
    assert args[:2] == ["gateway", "serve"], command
    app = web.Application()
    app.router.add_post("/v2/models/{name}/infer", echo_predictor)
    async with (
        grpc_collector() as (collector, grpc_port),
        http_collector() as (http_base, received),
        TestServer(app, host="127.0.0.1", port=0) as predictor,
    ):
        endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
        local = f"http://127.0.0.1:{grpc_port}" if endpoint.endswith(":4317") else http_base
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", local)
        for key, value in env.items():
            if key != "OTEL_EXPORTER_OTLP_ENDPOINT":
                monkeypatch.setenv(key, value)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        args[args.index("predictor:8080")] = f"127.0.0.1:{predictor.port}"
        with run_server("gateway", *args[1:], "--http_port", "0", "--grpc_port", "0") as server:
            async with aiohttp.ClientSession(server.base_url) as session:
                for _ in range(200):
                    async with session.get("/v2/health/ready") as ready:
                        if ready.status == 200:
                            break
                    await asyncio.sleep(0.05)
                async with session.post("/v2/models/m/infer", json=BODY) as response:
                    assert response.status == 200, await response.text()
            if env.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc":
                spans = await collector.wait_for(lambda spans: bool(spans))
                assert "POST /v2/models/{name}/infer" in {span.name for span in spans}
                assert received == []
            else:
                for _ in range(500):
                    if received:
                        break
                    await asyncio.sleep(0.02)
                assert [path for path, _, _ in received][:1] == ["/v1/traces"]
                assert collector.spans() == []
    assert "tracing on" in server.output(), server.output()


def test_the_readme_shows_both_protocols() -> None:
    commands = readme_commands()
    assert any("OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in c and ":4317" in c for c in commands)
    assert any("OTEL_EXPORTER_OTLP_PROTOCOL" not in c and ":4318" in c for c in commands)
