"""A predictor that misbehaves on request, run as its own process by the fault tests.

    python -m tests.faults.fault_server --http_port 0 --grpc_port 0 --blackhole_port 0 \
        --listen_address 127.0.0.1

It prints ``listening: REST on P, gRPC on G`` (the line `tests.server.procs` waits for), and
``blackhole on B``. Three listeners:

- REST (a raw asyncio HTTP/1.1 server, no framework, so that it can break HTTP on purpose):
  ``POST /v2/models/{name}/infer`` with a JSON body echoes the inputs back as outputs, unless
  the ``x-fault`` header asks for a fault (the gateway forwards it: ``--forward_headers``).
- gRPC ``ModelInfer`` (grpc.aio): echoes, unless the ``x-fault`` metadata asks for a fault.
- blackhole: accepts connections and never reads or writes a byte.

Faults (``x-fault: KIND[:ARG[:ARG...]]``):

    ok                     echo (the default)
    slow:S                 echo after S seconds
    late:S:CODE:KEY        answer CODE (gRPC: a code name) after S seconds; the time each
                           attempt tagged KEY was given is at GET /faults/told/KEY
    hang                   read the request, never answer (until the caller hangs up)
    half_request           read half of the request body, then close the connection
    half_body              answer 200 with Content-Length 1 MiB, send half of it, close
    garbage                answer bytes that are not HTTP, keep the connection open
    truncated_binary       a binary-extension answer whose tensor data is cut short
    wrong_length:V         a JSON answer with ``Inference-Header-Content-Length: V``
    status:CODE[:RA]       answer CODE with ``{"error": ...}`` (and ``Retry-After: RA``)
    flaky:KEY:N[:RA]       503 (Retry-After RA) for the first N requests tagged KEY, then echo
    (gRPC) unavailable:KEY:N[:RA]   UNAVAILABLE for the first N calls tagged KEY, then echo
    (gRPC) slow:S, hang, status:CODE_NAME
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
from typing import Any

import grpc
import orjson

from gateway._proto import SERVICE_NAME, pb

MIB = 1 << 20
_hits: collections.Counter[str] = collections.Counter()
# late:...:KEY: the seconds each attempt tagged KEY was given (x-request-timeout / deadline).
_told: dict[str, list[float]] = {}
# Connections held open by hang / garbage / blackhole, so that they are not collected.
_held: set[asyncio.StreamWriter] = set()


# REST


def _response(
    status: int, body: bytes, content_type: str = "application/json", **headers: str
) -> bytes:
    lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Fault'}"]
    lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{name.replace('_', '-')}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _echo(path: str, body: bytes) -> dict[str, Any]:
    request = orjson.loads(body)
    name = path.split("/")[3] if path.count("/") >= 4 else "model"
    outputs = [
        {k: tensor[k] for k in ("name", "shape", "datatype", "data")}
        for tensor in request["inputs"]
    ]
    answer: dict[str, Any] = {"model_name": name, "outputs": outputs}
    if "id" in request:
        answer["id"] = request["id"]
    return answer


async def _until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Hold the connection open until the caller closes it (what a hung server does)."""
    _held.add(writer)
    try:
        while await reader.read(65536):
            pass
    finally:
        _held.discard(writer)


async def _one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Serve one request; False once the connection is done with."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    request_line, *header_lines = head.rstrip("\r\n").split("\r\n")
    method, path, _ = request_line.split(" ", 2)
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    kind, *args = headers.get("x-fault", "ok").split(":")

    if kind == "half_request":
        await reader.readexactly(length // 2)
        return False  # closing with unread data makes the kernel send a reset
    body = await reader.readexactly(length)
    if method == "GET":
        if path.startswith("/faults/told/"):
            told = _told.get(path.rsplit("/", 1)[1], [])
            writer.write(_response(200, orjson.dumps(told)))
        else:  # readiness probes: always ready
            writer.write(_response(200, b'{"ready": true}'))
        return True
    if kind == "flaky":
        key, failures = args[0], int(args[1])
        _hits[key] += 1
        if _hits[key] <= failures:
            error = orjson.dumps({"error": f"warming up ({_hits[key]})"})
            extra = {"Retry_After": args[2]} if len(args) > 2 else {}
            writer.write(_response(503, error, **extra))
            return True
        kind = "ok"
    if kind == "slow":
        await asyncio.sleep(float(args[0]))
        kind = "ok"
    if kind == "late":
        _told.setdefault(args[2], []).append(float(headers.get("x-request-timeout", "nan")))
        await asyncio.sleep(float(args[0]))
        error = orjson.dumps({"error": f"the predictor says {args[1]}, late"})
        writer.write(_response(int(args[1]), error))
    elif kind == "ok":
        writer.write(_response(200, orjson.dumps(_echo(path, body))))
    elif kind == "hang":
        await _until_closed(reader, writer)
        return False
    elif kind == "half_body":
        full = orjson.dumps(_echo(path, body)).ljust(MIB)
        writer.write(_response(200, full)[: len(full) // 2])
        await writer.drain()
        return False
    elif kind == "garbage":
        writer.write(b"\x00\xffTHIS IS NOT HTTP\r\n\r\n" + os.urandom(512))
        await _until_closed(reader, writer)
        return False
    elif kind == "truncated_binary":
        n = 4096
        header = orjson.dumps(
            {
                "model_name": "m",
                "outputs": [
                    {
                        "name": "y",
                        "datatype": "INT32",
                        "shape": [n],
                        "parameters": {"binary_data_size": 4 * n},
                    }
                ],
            }
        )
        data = header + bytes(4 * n // 2)  # half of the tensor's bytes
        writer.write(
            _response(
                200,
                data,
                "application/octet-stream",
                Inference_Header_Content_Length=str(len(header)),
            )
        )
    elif kind == "wrong_length":
        answer = orjson.dumps(_echo(path, body))
        writer.write(
            _response(
                200, answer, "application/octet-stream", Inference_Header_Content_Length=args[0]
            )
        )
    elif kind == "status":
        error = orjson.dumps({"error": f"the predictor says {args[0]}"})
        extra = {"Retry_After": args[1]} if len(args) > 1 else {}
        writer.write(_response(int(args[0]), error, **extra))
    else:
        writer.write(_response(400, orjson.dumps({"error": f"unknown fault {kind!r}"})))
    await writer.drain()
    return True


async def _serve_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await _one_request(reader, writer):
            pass
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the caller hung up
    finally:
        writer.close()


async def _blackhole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    _held.add(writer)
    try:
        await asyncio.Event().wait()  # until the process ends
    finally:
        _held.discard(writer)


# gRPC


def _grpc_echo(request: Any) -> bytes:
    outputs = [
        pb.ModelInferResponse.InferOutputTensor(
            name=tensor.name, datatype=tensor.datatype, shape=tensor.shape, contents=tensor.contents
        )
        for tensor in request.inputs
    ]
    answer = pb.ModelInferResponse(
        model_name=request.model_name,
        id=request.id,
        outputs=outputs,
        raw_output_contents=request.raw_input_contents,
    )
    data: bytes = answer.SerializeToString()
    return data


async def _model_infer(data: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
    kind, *args = metadata.get("x-fault", "ok").split(":")
    request = pb.ModelInferRequest.FromString(data)
    if kind == "unavailable":
        key, failures = args[0], int(args[1])
        _hits[key] += 1
        if _hits[key] <= failures:
            trailers = (("retry-after", args[2]),) if len(args) > 2 else ()
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"warming up ({_hits[key]})", trailers)
    elif kind == "slow":
        await asyncio.sleep(float(args[0]))
    elif kind == "late":
        _told.setdefault(args[2], []).append(context.time_remaining() or float("nan"))
        await asyncio.sleep(float(args[0]))
        await context.abort(grpc.StatusCode[args[1]], f"the predictor says {args[1]}, late")
    elif kind == "hang":
        await asyncio.Event().wait()  # until the caller's deadline cancels this call
    elif kind == "status":
        await context.abort(grpc.StatusCode[args[0]], f"the predictor says {args[0]}")
    return _grpc_echo(request)


async def _ready(data: bytes, context: Any) -> bytes:
    answer: bytes = pb.ServerReadyResponse(ready=True).SerializeToString()
    return answer


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http_port", type=int, default=0)
    parser.add_argument("--grpc_port", type=int, default=0)
    parser.add_argument("--blackhole_port", type=int, default=0)
    parser.add_argument("--listen_address", default="127.0.0.1")
    args = parser.parse_args()

    http = await asyncio.start_server(_serve_http, args.listen_address, args.http_port)
    hole = await asyncio.start_server(_blackhole, args.listen_address, args.blackhole_port)
    server = grpc.aio.server()
    handlers = {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(_model_infer),
        "ServerReady": grpc.unary_unary_rpc_method_handler(_ready),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    grpc_port = server.add_insecure_port(f"{args.listen_address}:{args.grpc_port}")
    await server.start()
    http_port = http.sockets[0].getsockname()[1]
    print(f"blackhole on {hole.sockets[0].getsockname()[1]}", flush=True)
    print(f"listening: REST on {http_port}, gRPC on {grpc_port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for writer in list(_held):
        writer.close()
    http.close()
    hole.close()
    await server.stop(None)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
