"""``--trace_buffer`` on real processes: /traces and /traces.json on a chain of gateways
(A --REST v2--> B --gRPC--> echo predictor), the summary the page opens with, a 404 saying
how to turn them on without the flag, and ``gateway trace``
merging the three processes' views into one tree per request."""

from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import orjson
import pytest

from gateway.__main__ import main
from tests.server.procs import ServerProcess, run_server

BODY = orjson.dumps(
    {"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}
)
REQUESTS = 3
PORTS = ("--http_port", "0", "--grpc_port", "0")


def _start(stack: ExitStack, service: str, *flags: str) -> ServerProcess:
    with pytest.MonkeyPatch.context() as patch:
        # The environment is read when the process starts: each gets its own service name.
        patch.setenv("OTEL_SERVICE_NAME", service)
        patch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
        patch.delenv("OTEL_TRACES_EXPORTER", raising=False)
        server = stack.enter_context(run_server("gateway", "serve", "--model_name", "m", *flags))
    _wait_ready(server)
    return server


def _wait_ready(server: ServerProcess) -> None:
    deadline = time.monotonic() + 30
    while _status(f"{server.base_url}/v2/health/ready") != 200:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


@pytest.fixture(scope="module")
def chain() -> Iterator[dict[str, ServerProcess]]:
    with ExitStack() as stack:
        buffer = ("--trace_buffer", "20", *PORTS)
        predictor = _start(stack, "echo", "--transformer", "tests.models:EchoModel", *buffer)
        b = _start(
            stack,
            "gw-b",
            *("--predictor_host", f"127.0.0.1:{predictor.grpc_port}"),
            *("--predictor_protocol", "grpc-v2", *buffer),
        )
        a = _start(
            stack,
            "gw-a",
            *("--predictor_host", f"127.0.0.1:{b.http_port}", "--predictor_protocol", "v2"),
            *buffer,
        )
        plain = _start(stack, "plain", "--transformer", "tests.models:EchoModel", *PORTS)
        for _ in range(REQUESTS):
            request = urllib.request.Request(f"{a.base_url}/v2/models/m/infer", data=BODY)
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200
        yield {"predictor": predictor, "b": b, "a": a, "plain": plain}


def _traces(server: ServerProcess, query: str = "") -> Any:
    status, body, content_type = _get(f"{server.base_url}/traces.json{query}")
    assert status == 200, body
    assert content_type.startswith("application/json")
    return orjson.loads(body)


def test_traces_json_lists_each_request_with_this_process_spans(
    chain: dict[str, ServerProcess],
) -> None:
    document = _traces(chain["a"])
    assert document["max_traces"] == 20
    traces = document["traces"]
    assert len(traces) == REQUESTS
    for trace in traces:
        names = {span["name"] for span in trace["spans"]}
        # A's predict only forwards: no stage span of its own, the hop's span says it all.
        assert names == {"POST /v2/models/{name}/infer", "hop predictor"}
        for span in trace["spans"]:
            assert span["trace_id"] == trace["trace_id"]
            assert span["service"] == "gw-a"
            assert trace["start_ns"] <= span["start_ns"] <= span["end_ns"] <= trace["end_ns"]
        (hop,) = [span for span in trace["spans"] if span["kind"] == "CLIENT"]
        assert hop["attributes"]["gateway.hop.protocol"] == "v2"
    # Health probes and the views themselves are not traced: only the requests are here.
    assert [t["trace_id"] for t in _traces(chain["a"], "?last=2")["traces"]] == [
        t["trace_id"] for t in traces[-2:]
    ]


def test_each_process_keeps_its_own_part_of_the_same_traces(
    chain: dict[str, ServerProcess],
) -> None:
    ids = [{t["trace_id"] for t in _traces(chain[name])["traces"]} for name in ("a", "b")]
    assert ids[0] == ids[1] == {t["trace_id"] for t in _traces(chain["predictor"])["traces"]}
    spans = _traces(chain["predictor"])["traces"][0]["spans"]
    assert {s["name"] for s in spans} == {"inference.GRPCInferenceService/ModelInfer", "predict"}


def test_traces_page_draws_one_waterfall_per_trace(chain: dict[str, ServerProcess]) -> None:
    status, body, content_type = _get(f"{chain['b'].base_url}/traces")
    assert status == 200
    assert content_type.startswith("text/html")
    html = body.decode()
    traces = _traces(chain["b"])["traces"]
    assert html.count('<section class="waterfall"') == len(traces) == REQUESTS
    for trace in traces:
        assert f'data-trace-id="{trace["trace_id"]}"' in html
    assert "hop predictor" in html
    assert "via grpc-v2" in html
    assert "http://" not in html  # self-contained: no CDN, the machines may be offline
    assert "https://" not in html
    last = _get(f"{chain['b'].base_url}/traces?last=1")[1].decode()
    assert last.count('<section class="waterfall"') == 1


@pytest.mark.parametrize(
    "last", ["zero", "%C2%B2", "%D9%A3"], ids=["word", "superscript", "arabic"]
)
def test_bad_last_is_a_400(chain: dict[str, ServerProcess], last: str) -> None:
    # ASCII digits only: a superscript two passes str.isdigit but not int().
    for path in ("/traces.json", "/traces"):
        status, body, _ = _get(f"{chain['a'].base_url}{path}?last={last}")
        assert status == 400
        assert "last" in orjson.loads(body)["error"]


def test_without_trace_buffer_the_views_are_404_saying_how_to_turn_them_on(
    chain: dict[str, ServerProcess],
) -> None:
    status, body, content_type = _get(f"{chain['plain'].base_url}/traces.json")
    assert status == 404
    assert orjson.loads(body) == {
        "error": "the latency view is off: start the gateway with --trace_buffer N (200, say) "
        "to keep its last N traces here"
    }
    status, body, content_type = _get(f"{chain['plain'].base_url}/traces")
    assert status == 404
    assert content_type.startswith("text/html")
    assert "<h1>Recent traces: off</h1>" in body.decode()
    assert "start the gateway with --trace_buffer N" in body.decode()


def test_the_page_opens_with_a_summary_of_every_trace_kept(
    chain: dict[str, ServerProcess],
) -> None:
    html = _get(f"{chain['b'].base_url}/traces?last=1")[1].decode()
    summary = html.split('<section class="summary">', 1)[1].split("</section>", 1)[0]
    # First thing under the title.
    assert html.index('<section class="summary">') < html.index("<p>1 trace, newest first")
    assert html.index('<section class="summary">') < html.index('<section class="waterfall"')
    assert f"over the {REQUESTS} traces kept" in summary
    rows = re.findall(
        r"<tr><td[^>]*>([^<]+)</td><td>(\d+)</td><td>([\d.]+)</td><td>([\d.]+)", summary
    )
    assert [(name, int(n)) for name, n, _, _ in rows] == [
        ("server", REQUESTS),
        # A default predict only forwards: its hop's span stands for it (no stage row).
        ("hop.predictor", REQUESTS),
    ]
    for _, _, p50, p99 in rows:
        assert 0 < float(p50) <= float(p99)
    # The slowest trace, linked: to its waterfall (here not drawn: ?last=1 shows another).
    traces = _traces(chain["b"])["traces"]
    worst = max(traces, key=lambda t: t["end_ns"] - t["start_ns"])
    link = re.search(r"Slowest: <a href='([^']+)'>", summary)
    assert link is not None
    shown = html.split('<section class="waterfall"')[1]
    if f'id="t-{worst["trace_id"]}"' in shown:
        assert link.group(1) == f"#t-{worst['trace_id']}"
    else:
        assert link.group(1) == f"?last={REQUESTS}#t-{worst['trace_id']}"
    full = _get(f"{chain['b'].base_url}/traces?last={REQUESTS}")[1].decode()
    assert f'id="t-{worst["trace_id"]}"' in full


def test_gateway_trace_merges_the_chain_into_one_tree(
    chain: dict[str, ServerProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    urls = [arg for name in ("a", "b", "predictor") for arg in ("--url", chain[name].base_url)]
    assert main(["trace", *urls, "--last", "2", "--width", "120"]) == 0
    out = capsys.readouterr().out
    headers = re.findall(r"^trace ([0-9a-f]{32}) ", out, re.MULTILINE)
    assert headers == [t["trace_id"] for t in _traces(chain["a"])["traces"][-2:]]
    first = out.split("\n\n")[0].splitlines()
    assert "(echo, gw-a, gw-b)" in first[0]
    # One tree: each process's spans nested under the hop that called it.
    columns = [re.match(r"  ( *\S.*?) {2,}(\S+) +\|", line) for line in first[1:]]
    names = [(m.group(1), m.group(2)) if m else None for m in columns]
    assert names == [
        ("POST /v2/models/{name}/infer", "gw-a"),
        ("  hop predictor", "gw-a"),
        ("    POST /v2/models/{name}/infer", "gw-b"),
        ("      hop predictor", "gw-b"),
        ("        inference.GRPCInferenceService/ModelInfer", "echo"),
        ("          predict", "echo"),
    ]
    assert all("|" in line and line.rstrip().endswith("ms") for line in first[1:])


def test_gateway_trace_reports_a_gateway_without_the_buffer(
    chain: dict[str, ServerProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "--url", chain["plain"].base_url]) == 1
    assert "--trace_buffer" in capsys.readouterr().err
    # One source without traces does not hide the others'.
    urls = ["--url", chain["plain"].base_url, "--url", chain["a"].base_url]
    assert main(["trace", *urls, "--last", "1"]) == 0
    assert "hop predictor" in capsys.readouterr().out


def test_gateway_trace_takes_an_address_without_its_scheme(
    chain: dict[str, ServerProcess], capsys: pytest.CaptureFixture[str]
) -> None:
    address = chain["a"].base_url.removeprefix("http://")
    assert main(["trace", "--url", address, "--last", "1"]) == 0
    assert "hop predictor" in capsys.readouterr().out


def test_service_names_were_set_for_the_children_only() -> None:
    assert os.environ.get("OTEL_SERVICE_NAME") not in ("echo", "gw-a", "gw-b", "plain")
