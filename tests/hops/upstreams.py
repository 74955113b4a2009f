"""Real upstreams on 127.0.0.1 for the transport tests: our own servers, bare aiohttp apps,
raw sockets, and a test certificate authority."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway import InferInput, InferRequest, request_context
from gateway._proto import SERVICE_NAME
from gateway.dataplane import DataPlane
from gateway.hops.grpc import GrpcHop
from gateway.hops.rest import RestHop
from gateway.hops.shaping import Shaping
from gateway.metrics import Metrics
from gateway.model import Model
from gateway.model_repository import ModelRepository
from gateway.request_context import RequestContext
from gateway.server.grpc import create_grpc_server
from gateway.server.rest import create_app
from gateway.settings import ServerSettings

SETTINGS = ServerSettings(listen_address="127.0.0.1")


def shaped(hop: RestHop | GrpcHop) -> Shaping:
    """A transport with dicts shaped for it, as every hop the server builds has them."""
    return Shaping(hop, hop.settings.model_name)


# Every port `free_port` handed out in this process: the kernel may hand a port it has just
# released out again, and two servers of one test (a compose stack has a dozen ports) must
# not be given the same one.
_HANDED_OUT: set[int] = set()
_DRAWS = 100


def free_port() -> int:
    """A port nothing listens on (at the time of asking), and not handed out before."""
    for _ in range(_DRAWS):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"no port in {_DRAWS} draws that was not handed out before")


def dataplane(models: list[Model]) -> DataPlane:
    repository = ModelRepository()
    for model in models:
        repository.update(model)
    plane = DataPlane(repository)
    plane.starting = False
    return plane


@asynccontextmanager
async def serve_app(
    app: web.Application, port: int = 0, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve `app`; yields its ``host:port``."""
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server(ssl=ssl_context)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.close()


@asynccontextmanager
async def serve_rest(models: list[Model], port: int = 0) -> AsyncIterator[str]:
    """Our REST server for `models`; yields its ``host:port``."""
    app = create_app(dataplane(models), SETTINGS, Metrics())
    async with serve_app(app, port) as address:
        yield address


@asynccontextmanager
async def serve_grpc(
    models: list[Model],
    port: int = 0,
    credentials: grpc.ServerCredentials | None = None,
) -> AsyncIterator[str]:
    """Our gRPC server for `models` (over TLS with `credentials`); yields its ``host:port``."""
    server = create_grpc_server(dataplane(models), SETTINGS, Metrics())
    address = f"127.0.0.1:{port}"
    if credentials is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{bound}"
    finally:
        await server.stop(None)


@asynccontextmanager
async def serve_model_infer(model_infer: Callable[[bytes, Any], Any]) -> AsyncIterator[str]:
    """A bare gRPC server whose only method is ModelInfer, answered by `model_infer` (bytes
    in, bytes out); yields its ``host:port``."""
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(model_infer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, {"ModelInfer": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def serve_socket(handler: Handler) -> AsyncIterator[str]:
    """A raw TCP server, for upstreams that do not speak HTTP properly."""
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@contextmanager
def deadline_in(seconds: float) -> Iterator[RequestContext]:
    """Serve the code inside as a request whose deadline is `seconds` from now."""
    context = RequestContext("test-request", "v2", deadline=time.monotonic() + seconds)
    with request_context.serving(context):
        yield context


@contextmanager
def serving() -> Iterator[RequestContext]:
    """Serve the code inside as a request with no deadline."""
    with request_context.serving(RequestContext("test-request", "v2")) as context:
        yield context


def array(datatype: str) -> np.ndarray[Any, Any]:
    """Two rows of `datatype` values, with each type's awkward cases."""
    if datatype == "BYTES":
        return np.array([[b"caf\xc3\xa9", b""], [b"a,b", b"\xf0\x9f\x99\x82"]], dtype=object)
    if datatype == "BOOL":
        return np.array([[True, False], [False, True]])
    if datatype == "BF16":  # values BF16 holds exactly
        return np.array([[1.5, -2.0], [0.0078125, 3.0e38]], dtype=np.float32)
    dtype = np.dtype(datatype.lower().replace("fp", "float"))
    if dtype.kind == "f":
        return np.array([[1.5, -2.25], [0.0, 1e4]], dtype=dtype)
    info = np.iinfo(dtype)
    return np.array([[info.min, info.max], [0, 7]], dtype=dtype)


DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
)  # fmt: skip


def every_datatype(model: str = "echo", request_id: str = "r-1") -> InferRequest:
    """A request with one input of each datatype, set from numpy."""
    inputs = []
    for datatype in DATATYPES:
        data = array(datatype)
        tensor = InferInput(datatype.lower(), list(data.shape), datatype)
        tensor.set_data_from_numpy(data)
        inputs.append(tensor)
    return InferRequest(model, inputs, request_id=request_id)


def assert_echoed(request: InferRequest, outputs: list[Any]) -> None:
    assert [o.name for o in outputs] == [i.name for i in request.inputs]
    for tensor, output in zip(request.inputs, outputs, strict=True):
        assert output.datatype == tensor.datatype, tensor.name
        assert output.shape == tensor.shape, tensor.name
        np.testing.assert_array_equal(output.as_numpy(), tensor.as_numpy(), err_msg=tensor.name)


@dataclass(frozen=True)
class Authority:
    """A test CA and a certificate it signed for 127.0.0.1."""

    ca_file: str
    cert_file: str
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def grpc_credentials(self) -> grpc.ServerCredentials:
        key, cert = Path(self.key_file).read_bytes(), Path(self.cert_file).read_bytes()
        return grpc.ssl_server_credentials([(key, cert)])


def make_authority(directory: Path) -> Authority:
    """A CA and a server certificate, with `cryptography` when installed, else `openssl`."""
    paths = Authority(
        str(directory / "ca.pem"), str(directory / "server.pem"), str(directory / "server.key")
    )
    try:
        import cryptography  # noqa: F401
    except ImportError:
        if shutil.which("openssl") is None:
            import pytest

            pytest.skip("neither the cryptography package nor openssl is available")
        _openssl_authority(directory, paths)
    else:
        _cryptography_authority(paths)
    return paths


def _openssl_authority(directory: Path, paths: Authority) -> None:
    # What strict verification (Python 3.13's default) asks of a server certificate.
    (directory / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    commands = [
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-CA -keyout ca.key -out ca.pem"
        " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr",
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2"
        " -extfile ext.cnf -out server.pem",
    ]
    for command in commands:
        subprocess.run(
            ["openssl", *command.split()], check=True, capture_output=True, cwd=directory
        )


def _cryptography_authority(paths: Authority) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def build(subject: str, key: Any, issuer_key: Any, ca: bool) -> Any:
        usage = dict.fromkeys(
            ["content_commitment", "data_encipherment", "key_agreement", "encipher_only",
             "decipher_only", "key_encipherment"], False
        )  # fmt: skip
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=not ca, key_cert_sign=ca, crl_sign=ca, **usage),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
        )
        if not ca:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = build("test CA", ca_key, ca_key, True)
    server_cert = build("127.0.0.1", server_key, ca_key, False)
    pem = serialization.Encoding.PEM
    Path(paths.ca_file).write_bytes(ca_cert.public_bytes(pem))
    Path(paths.cert_file).write_bytes(server_cert.public_bytes(pem))
    Path(paths.key_file).write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
