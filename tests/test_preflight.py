"""Start-up mistakes, each made on purpose: the gateway refuses with one line naming the flag
(gateway.preflight), and exits with status 2, no traceback.

Mistakes caught before any server starts run `gateway.__main__.main` in this process; a port
in use is found by binding it, so those start a real ``gateway serve`` process."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.__main__ import main
from gateway.preflight import StartupError, bind_error, check_host
from tests.hops.upstreams import free_port

ROOT = Path(__file__).resolve().parent.parent
LOCAL = ("--listen_address", "127.0.0.1")


def refusal(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line `gateway serve argv` stops with (in this process)."""
    try:
        code = main(["serve", *argv, *LOCAL])
    except SystemExit as stopped:  # ModelServer.start refused
        code = int(stopped.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("gateway: error: ")]
    assert len(lines) == 1, err
    return lines[0].removeprefix("gateway: error: ")


def served_refusal(*argv: str, local: bool = True) -> str:
    """The one line a real ``gateway serve argv`` process stops with."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", *argv, *(LOCAL if local else ())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("gateway: error: ") == 1
    # Nothing else but our own log lines (gRPC's failed bind logs lines of its own).
    ours = re.compile(r"\d{4}-\d\d-\d\d [\d:,]+ [A-Z]+ gateway|gateway: error: ")
    others = [line for line in done.stderr.splitlines() if not ours.match(line)]
    assert others == [], done.stderr
    return done.stderr.splitlines()[-1].removeprefix("gateway: error: ")


@contextmanager
def taken_port() -> Iterator[int]:
    """A port of 127.0.0.1 that another process (here: a socket) listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_a_rest_port_in_use_is_named_with_its_flag() -> None:
    with taken_port() as port:
        line = served_refusal("--http_port", str(port), "--grpc_port", "0")
    assert line == (
        f"REST port {port} is already in use on 127.0.0.1: stop what listens there, "
        "or pick another port with --http_port"
    )


def test_a_grpc_port_in_use_is_named_with_its_flag() -> None:
    with taken_port() as port:
        line = served_refusal("--http_port", "0", "--grpc_port", str(port))
    assert line == (
        f"gRPC port {port} is already in use on 127.0.0.1: stop what listens there, "
        "or pick another port with --grpc_port"
    )


def test_workers_find_a_port_in_use_before_they_fork(capsys: pytest.CaptureFixture[str]) -> None:
    with taken_port() as port:
        line = refusal(capsys, "--workers", "2", "--http_port", str(port), "--grpc_port", "0")
    assert line.startswith(f"REST port {port} is already in use")
    assert line.endswith("--http_port")


def test_an_address_of_another_machine() -> None:
    # TEST-NET-1 (RFC 5737): never an address of this machine.
    argv = ("--http_port", "0", "--grpc_port", "0", "--listen_address", "192.0.2.1")
    line = served_refusal(*argv, local=False)
    assert line == (
        "cannot listen on 192.0.2.1: it is not an address of this machine "
        "(--listen_address; 0.0.0.0 listens on all)"
    )


def test_a_bind_error_gateway_cannot_explain_keeps_its_own_words() -> None:
    error = bind_error("gRPC", "--grpc_port", "127.0.0.1", free_port(), RuntimeError("odd"))
    assert str(error).endswith("(--grpc_port): odd")


def test_an_unknown_class_lists_the_model_subclasses_of_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "scale.py"
    source.write_text(
        "from gateway import Model\n\n"
        "class Scale(Model):\n    pass\n\n"
        "class Shift(Model):\n    pass\n\n"
        "class Helper:\n    pass\n"
    )
    line = refusal(capsys, "--transformer", f"{source}:Scael")
    assert line == f"{source} has no 'Scael'; its Model subclasses: Scale, Shift"
    line = refusal(capsys, "--transformer", f"{source}:Helper")
    assert line == (
        f"'Helper' in {source} is not a gateway Model subclass; its Model subclasses: Scale, Shift"
    )
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    assert refusal(capsys, "--transformer", f"{empty}:X") == (
        f"'X' in {empty} is not a gateway Model subclass; it defines none"
    )


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--predictor_host", "a:8080,b:80x", "--predictor_host 'a:8080,b:80x' is not HOST:PORT "
         "(the port must be a number from 1 to 65535)"),
        ("--predictor_shadow_host", "a:1,b c:2", "--predictor_shadow_host 'a:1,b c:2' is not "
         "HOST:PORT ('b c' is not a host name or IP address)"),
        ("--predictor_host", "localhost:port", "--predictor_host 'localhost:port' is not "
         "HOST:PORT (the port must be a number from 1 to 65535)"),
        ("--predictor_host", "localhost:8080/v2", "--predictor_host 'localhost:8080/v2' is not "
         "HOST:PORT (a path is not allowed, only host[:port])"),
        ("--explainer_host", "my host:80", "--explainer_host 'my host:80' is not HOST:PORT "
         "('my host' is not a host name or IP address)"),
    ],
)  # fmt: skip
def test_a_malformed_host(
    flag: str, value: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refusal(capsys, flag, value) == expected


def test_what_kserve_accepts_as_a_host_passes() -> None:
    for host in ("predictor.default", "predictor:8080", "http://p:80", "https://p", "[::1]:9"):
        check_host("--predictor_host", host)
    with pytest.raises(StartupError):
        check_host("--predictor_host", "")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--http_port", "9000", "--grpc_port", "9000"),
         "--http_port and --grpc_port are both 9000: give each server a port of its own"),
        (("--http_port", "70000"),
         "--http_port 70000 is not a port: use 1-65535 (0: any free port)"),
        (("--ssl_certfile", "cert.pem"),
         "--ssl_certfile needs --ssl_keyfile too: serving HTTPS takes both"),
        (("--ssl_keyfile", "key.pem"),
         "--ssl_keyfile needs --ssl_certfile too: serving HTTPS takes both"),
        (("--predictor_host", "p:80", "--predictor_ca_file", "ca.pem"),
         "--predictor_ca_file is read only for TLS: add --predictor_use_ssl true "
         "(or give an https:// host)"),
    ],
)  # fmt: skip
def test_flags_that_contradict(
    argv: tuple[str, ...], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refusal(capsys, *argv) == expected


def test_the_same_port_twice_is_fine_without_grpc(capsys: pytest.CaptureFixture[str]) -> None:
    # Refused for another reason (the CA file), not for the ports: gRPC is off.
    line = refusal(capsys, "--http_port", "9000", "--grpc_port", "9000", "--enable_grpc", "false",
                   "--predictor_ca_file", "ca.pem")  # fmt: skip
    assert line.startswith("--predictor_ca_file")


def test_mistyped_flags_are_named_before_the_start(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--predictor_hots", "p:80", "--predictor-protocol=v2", "--http_port", "-1"])
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == [
        "gateway serve: warning: unknown flag --predictor_hots (did you mean --predictor_host?);"
        " ignored",
        "gateway serve: warning: unknown flag --predictor-protocol (did you mean "
        "--predictor_protocol?); ignored",
    ]
    assert err[-1] == "gateway: error: --http_port -1 is not a port: use 1-65535 (0: any free port)"


def test_other_commands_refuse_a_mistyped_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["trace", "--url", "127.0.0.1:1", "--lst", "2"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "gateway trace: error: unknown flag --lst (did you mean --last?)"
    )
    with pytest.raises(SystemExit):
        main(["demo", "--requests", "1", "extra"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "gateway demo: error: unrecognized arguments: extra"
    )
