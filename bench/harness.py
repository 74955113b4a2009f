"""What the server benchmarks share: processes, CPU pinning and accounting, load, tables.

- `spawn` runs a server as its own process, pinned to its CPUs, its output in a log file, and
  yields once its ports are known: read from its log (our ``listening: REST on <port>, gRPC on
  <port>`` line) or chosen up front with `free_port` and polled until ready.
- `cpu_seconds` / `proc_stat` read a process's user + system time (and minor page faults)
  from ``/proc/<pid>/stat``; `machine_cpu_seconds` the whole machine's busy and stolen time.
- `cpu_split`, `pin` and `set_nice` keep servers and load on separate CPUs.
- `measure` runs one `Load` (concurrent REST POSTs over one pooled aiohttp session, or gRPC
  calls over one grpc.aio channel) in a fresh process pinned to the load CPUs, and returns
  throughput, latency percentiles and the server's CPU time over the measured window.
- The payload builders (`v1_body`, `v2_json_body`, `v2_binary_body`, `grpc_infer_body`) and
  checkers (`check_*`) build request bodies once and check an echo answer before timing it.
- `markdown_table` prints results.

Linux only (``/proc``, ``sched_setaffinity``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from bench import venvs

ROOT = Path(__file__).resolve().parents[1]
LOCALHOST = "127.0.0.1"
# What our ModelServer logs once both servers listen (port 0 becomes the bound port).
LISTENING = re.compile(r"listening: REST on (\d+), gRPC on (\w+)")
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC_OPTIONS = (
    ("grpc.max_send_message_length", 256 << 20),
    ("grpc.max_receive_message_length", 256 << 20),
)
_TICKS = os.sysconf("SC_CLK_TCK")

# CPUs


def cpu_split() -> tuple[frozenset[int], frozenset[int]]:
    """(server CPUs, load CPUs): the first usable CPU for the server, the rest for the load.

    With a single CPU both get it, and the figures measure contention as much as the server.
    """
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return frozenset(usable), frozenset(usable)
    return frozenset(usable[:1]), frozenset(usable[1:])


def pin(pid: int, cpus: frozenset[int]) -> None:
    """Pin every thread of process `pid` (threads it starts later inherit the mask)."""
    try:
        tasks = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        tasks = [pid]
    for tid in tasks:
        with suppress(ProcessLookupError, PermissionError):  # a thread that ended
            os.sched_setaffinity(tid, cpus)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid`, all its threads, from ``/proc/<pid>/stat``."""
    return proc_stat(pid)[0]


def proc_stat(pid: int) -> tuple[float, int]:
    """(user + system CPU seconds, minor page faults) of process `pid`, all its threads.

    Minor faults count pages touched for the first time: each fresh payload-sized buffer costs
    size / 4096 of them, a cost that shows up as system time.
    """
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat[stat.rindex(b")") + 2 :].split()
    # Fields 10, 14 and 15 of proc(5): minflt, utime, stime.
    minflt, utime, stime = int(fields[7]), int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS, minflt


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, stolen) CPU seconds of all CPUs of the machine: busy is neither idle, waiting on
    I/O nor stolen; stolen is time a virtual machine's host ran something else instead."""
    with open("/proc/stat", "rb") as handle:
        fields = handle.readline().split()  # the "cpu" line: all CPUs
    # user nice system idle iowait irq softirq steal (guest time is inside user already)
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
    return (user + nice + system + irq + softirq) / _TICKS, steal / _TICKS


def set_nice(nice: int) -> bool:
    """Set this process's niceness (negative raises its priority, which needs CAP_SYS_NICE).

    On a shared machine a negative value keeps other work from taking the measured CPUs.
    With the scheduler's autogroups on (``/proc/sys/kernel/sched_autogroup_enabled``), the
    CPU is shared between sessions first and a process's own niceness only counts within its
    session, so the niceness of this process's session group is set too.
    """
    if not nice:
        return True
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        return False
    with suppress(OSError), open("/proc/self/autogroup", "w") as handle:
        handle.write(str(nice))
    return True


# Processes


@dataclass
class Server:
    """A server process and where it listens."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    http_port: int | None = None
    grpc_port: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://{LOCALHOST}:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"{LOCALHOST}:{self.grpc_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output().splitlines()[-lines:])


def free_port(host: str = LOCALHOST) -> int:
    """A port nothing listens on now (for servers that cannot be given port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def spawn(
    name: str,
    argv: Sequence[str],
    *,
    cpus: frozenset[int] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path = ROOT,
    http_port: int | None = None,
    grpc_port: int | None = None,
    listening: re.Pattern[str] | None = LISTENING,
    ready_path: str | None = "/v2/health/ready",
    startup_timeout: float = 60.0,
    stop_timeout: float = 15.0,
    nice: int = 0,
) -> Iterator[Server]:
    """Run `argv` as a server process; yield it once it listens and is ready; stop it after.

    Ports: when `http_port` is None they are read from the log with `listening` (group 1 the
    REST port, group 2 the gRPC port or a word); otherwise they are the given ones. Either way
    the server is then polled: GET `ready_path` answers 200 and the gRPC port accepts.
    stdout and stderr go to a log file (never a pipe the server could block on).
    """
    log_file = tempfile.NamedTemporaryFile(  # noqa: SIM115
        prefix=f"bench-{re.sub(r'[^A-Za-z0-9]+', '-', name)}-", suffix=".log", delete=False
    )
    log = Path(log_file.name)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}

    def in_child() -> None:  # between fork and exec: pin before any thread starts
        if cpus:
            os.sched_setaffinity(0, cpus)
        set_nice(nice)

    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=in_child,  # the benchmark's parent process runs no threads
    )
    log_file.close()
    server = Server(name, process, log, http_port, grpc_port)
    clean = False
    try:
        _wait_started(server, listening, ready_path, startup_timeout)
        if cpus:
            pin(server.pid, cpus)
        if nice and os.getpriority(os.PRIO_PROCESS, server.pid) != nice:
            print(f"{name}: could not set nice {nice} (needs CAP_SYS_NICE)", file=sys.stderr)
        yield server
        clean = True
    finally:
        stop(server, stop_timeout)
        if clean:  # keep the log of a server that failed, for a look
            log.unlink(missing_ok=True)


def stop(server: Server, timeout: float = 15.0) -> int:
    """SIGTERM the server's process group; SIGKILL it if it has not exited within `timeout`."""
    process = server.process
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        except ProcessLookupError:
            pass
    return process.wait()


def _wait_started(
    server: Server,
    listening: re.Pattern[str] | None,
    ready_path: str | None,
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout

    def check_alive(waiting_for: str) -> None:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited ({server.process.returncode}) before {waiting_for}; "
                f"{server.log}:\n{server.tail()}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{server.name}: no {waiting_for} in {timeout:g} s; {server.log}:\n{server.tail()}"
            )

    if server.http_port is None:
        if listening is None:
            raise ValueError("give the ports, or a pattern to read them from the log")
        while True:
            match = listening.search(server.output())
            if match:
                server.http_port = int(match.group(1))
                grpc = match.group(2) if listening.groups >= 2 else None
                server.grpc_port = int(grpc) if grpc and grpc.isdigit() else None
                break
            check_alive("listening line in its log")
            time.sleep(0.05)
    while ready_path is not None and not _http_ok(server.base_url + ready_path):
        check_alive(f"200 from GET {ready_path}")
        time.sleep(0.05)
    while server.grpc_port is not None and not _accepts(LOCALHOST, server.grpc_port):
        check_alive(f"gRPC port {server.grpc_port} accepting")
        time.sleep(0.05)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def python_info(python: Path | str, modules: Sequence[str]) -> str:
    """``Python 3.11.7, aiohttp 3.14.5, uvloop -`` for interpreter `python` (- = missing)."""
    code = (
        "import importlib.metadata as m, platform, sys\n"
        "parts = ['Python ' + platform.python_version()]\n"
        "for name in sys.argv[1:]:\n"
        "    try: parts.append(f'{name} {m.version(name)}')\n"
        "    except m.PackageNotFoundError: parts.append(f'{name} -')\n"
        "print(', '.join(parts))\n"
    )
    done = subprocess.run(
        [str(python), "-c", code, *modules], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or f"({python}: {done.stderr.strip()[-200:]})"


def checkout(paths: Sequence[str] = ("gateway",)) -> str:
    """The commit of this checkout, and whether `paths` differ from it (read-only git)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git checkout"
    changed = git("status", "--porcelain", "--", *paths)
    return f"{commit}{' + uncommitted changes in ' + ', '.join(paths) if changed else ''}"


# Payloads: request bodies built once, and checks that an echo model answered them.

JSON_HEADERS = {"Content-Type": "application/json"}


def v1_body(instances: list[Any]) -> bytes:
    return json.dumps({"instances": instances}).encode()


def v2_json_body(name: str, shape: list[int], data: list[float], datatype: str = "FP32") -> bytes:
    tensor = {"name": name, "shape": shape, "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


def v2_binary_body(
    name: str, shape: list[int], raw: bytes, datatype: str = "FP32"
) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body (binary outputs asked for) and the headers it needs."""
    header = {
        "inputs": [
            {
                "name": name,
                "shape": shape,
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    head = json.dumps(header).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(head)),
    }
    return head + raw, headers


def grpc_infer_body(
    model: str, name: str, shape: list[int], raw: bytes, datatype: str = "FP32"
) -> bytes:
    """A serialized ModelInferRequest with the tensor in ``raw_input_contents``."""
    from gateway._proto import pb

    request = pb.ModelInferRequest(
        model_name=model,
        inputs=[pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape)],
        raw_input_contents=[raw],
    )
    return bytes(request.SerializeToString())


def http_post(
    url: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """One POST (no pooling; for checks, not for load): status, headers (lower-case), body."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            items = response.headers.items()
            return response.status, {k.lower(): v for k, v in items}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def grpc_call(target: str, method: str, body: bytes) -> bytes:
    """One unary gRPC call with serialized bytes in and out (for checks, not for load)."""
    import grpc

    with grpc.insecure_channel(target, options=list(GRPC_OPTIONS)) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        answer: bytes = call(body, timeout=30)
        return answer


Check = Callable[[str, bytes, Mapping[str, str]], None]  # (target, body, headers)


def check_v1_echo(url: str, body: bytes, headers: Mapping[str, str] = JSON_HEADERS) -> None:
    """Raise AssertionError unless POSTing v1 `body` to `url` answers its instances back."""
    status, _, answer = http_post(url, body, headers)
    if status != 200:
        raise AssertionError(f"HTTP {status}: {answer[:300]!r}")
    sent, got = json.loads(body)["instances"], json.loads(answer).get("predictions")
    if got != sent:
        raise AssertionError(f"predictions {str(got)[:200]} are not the instances sent")


def check_v2_json_echo(url: str, body: bytes, headers: Mapping[str, str] = JSON_HEADERS) -> None:
    """Raise AssertionError unless v2 JSON `body` comes back with its input as the output."""
    status, _, answer = http_post(url, body, headers)
    if status != 200:
        raise AssertionError(f"HTTP {status}: {answer[:300]!r}")
    sent, got = json.loads(body)["inputs"][0], json.loads(answer)["outputs"][0]
    for key in ("name", "shape", "datatype", "data"):
        if got.get(key) != sent[key]:
            raise AssertionError(f"output {key} {str(got.get(key))[:200]} != input's")


def check_v2_binary_echo(url: str, body: bytes, headers: Mapping[str, str]) -> None:
    """Raise AssertionError unless binary `body` comes back as a binary output, same bytes."""
    status, answer_headers, answer = http_post(url, body, headers)
    if status != 200:
        raise AssertionError(f"HTTP {status}: {answer[:300]!r}")
    length = answer_headers.get("inference-header-content-length")
    if length is None:
        raise AssertionError(f"no binary answer: {answer[:300]!r}")
    sent_length = int(headers["Inference-Header-Content-Length"])
    output = json.loads(answer[: int(length)])["outputs"][0]
    if output.get("parameters", {}).get("binary_data_size") != len(body) - sent_length:
        raise AssertionError(f"output is not binary: {output}")
    if answer[int(length) :] != body[sent_length:]:
        raise AssertionError("binary output bytes differ from the input bytes")


def check_grpc_echo(target: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
    """Raise AssertionError unless ModelInfer `body` answers its raw inputs as raw outputs."""
    from gateway._proto import pb

    sent = pb.ModelInferRequest.FromString(body)
    got = pb.ModelInferResponse.FromString(grpc_call(target, MODEL_INFER, body))
    if list(got.raw_output_contents) != list(sent.raw_input_contents):
        raise AssertionError("raw_output_contents differ from raw_input_contents")
    if [o.name for o in got.outputs] != [i.name for i in sent.inputs]:
        raise AssertionError(f"outputs {[o.name for o in got.outputs]} != inputs")


# Load


@dataclass(frozen=True)
class Load:
    """One measured cell: `concurrency` callers sending `body` back to back (a closed loop),
    or, with `rate`, requests started at that many per second whatever the answers do (an
    open loop, at most `concurrency` in flight: a request due while all are busy waits).

    kind "http": POST `body` with `headers` to the URL `target`, over one aiohttp session
    with a `concurrency`-connection pool. kind "grpc": call `method` with the serialized
    `body` on one grpc.aio channel to `target` (host:port). Answers are read in full but not
    decoded: an answer counts when its status is 200 / OK.
    """

    kind: Literal["http", "grpc"]
    target: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = MODEL_INFER
    concurrency: int = 16
    warmup: float = 1.0
    duration: float = 5.0
    server_pid: int | None = None  # whose CPU time to account over the window
    watch_pids: tuple[int, ...] = ()  # more processes whose CPU time to account (a chain)
    cpus: frozenset[int] | None = None  # where the load process runs
    nice: int = 0  # the load process's niceness (see `set_nice`)
    timeout: float = 30.0
    rate: float | None = None  # requests/s for an open loop; None: closed loop


@dataclass(frozen=True)
class Result:
    """What one `Load` measured over its window (after the warm-up)."""

    requests: int  # answered OK within the window
    errors: int  # failed within the window (and during warm-up)
    seconds: float  # the window
    p50: float  # latency, seconds
    p99: float
    server_cpu: float | None  # CPU seconds of `server_pid` over the window
    server_faults: int | None  # minor page faults of `server_pid` over the window
    client_cpu: float  # CPU seconds of the load process over the window
    machine_cpu: float  # CPU seconds of all CPUs busy over the window (everything)
    machine_steal: float  # CPU seconds the host (hypervisor) took from this machine
    first_error: str | None = None
    watched_cpu: tuple[float, ...] = ()  # CPU seconds of each of `Load.watch_pids`

    def watched_per_request(self, index: int) -> float | None:
        """CPU seconds per request answered of watched process `index`."""
        if index >= len(self.watched_cpu) or not self.requests:
            return None
        return self.watched_cpu[index] / self.requests

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_request(self) -> float | None:
        """Server CPU seconds per request answered."""
        if self.server_cpu is None or not self.requests:
            return None
        return self.server_cpu / self.requests

    @property
    def faults_per_request(self) -> float | None:
        """Server minor page faults per request answered."""
        if self.server_faults is None or not self.requests:
            return None
        return self.server_faults / self.requests

    @property
    def server_util(self) -> float | None:
        return None if self.server_cpu is None else self.server_cpu / self.seconds

    @property
    def client_util(self) -> float:
        return self.client_cpu / self.seconds

    @property
    def other_util(self) -> float:
        """CPU busy with neither the server, the watched processes nor the load (other
        processes, the kernel's network work outside them), as a share of one CPU: high means
        disturbed figures."""
        ours = (self.server_cpu or 0.0) + self.client_cpu + sum(self.watched_cpu)
        return (self.machine_cpu - ours) / self.seconds

    @property
    def steal_util(self) -> float:
        """CPU the hypervisor took from this virtual machine, as a share of one CPU."""
        return self.machine_steal / self.seconds


def add_run_options(parser: argparse.ArgumentParser, taking_turns: str) -> None:
    """``--duration``, ``--warmup``, ``--concurrency`` and ``--rounds`` (`taking_turns`: what
    runs once per round)."""
    parser.add_argument("--duration", type=float, help="measured seconds per cell (default 5)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 1)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help=f"start {taking_turns} this many times, taking turns; each cell reports its "
        "median round (by CPU per request of the process measured)",
    )


def add_kserve_options(parser: argparse.ArgumentParser) -> None:
    """``--kserve-spec`` and ``--kserve-venv``, for `kserve_python`."""
    parser.add_argument(
        "--kserve-spec",
        default=venvs.KSERVE_SPEC,
        help="what pip installs for KServe (a requirement or a wheel file)",
    )
    parser.add_argument(
        "--kserve-venv", type=Path, default=venvs.KSERVE_VENV, help="KServe's virtual environment"
    )


def kserve_python(args: argparse.Namespace) -> Path | str:
    """KServe's interpreter (installing it on first use), or why there is none."""
    try:
        return venvs.kserve_python(args.kserve_spec, args.kserve_venv)
    except Exception as exc:
        return f"KServe not measured: installing {args.kserve_spec} failed ({exc})"


class Measured(Protocol):
    """A benchmark cell: a result, or why there is none."""

    @property
    def result(self) -> Result | None: ...

    @property
    def error(self) -> str | None: ...


CellT = TypeVar("CellT", bound=Measured)


def median_cells(rounds: Sequence[Sequence[CellT]]) -> list[CellT]:
    """Each cell from its median round by CPU per request of the process measured; a cell
    that failed in any round is reported as failed."""
    chosen = []
    for same_cell in zip(*rounds, strict=True):
        failed = [cell for cell in same_cell if cell.error or cell.result is None]
        if failed:
            chosen.append(failed[0])
            continue
        ranked = sorted(same_cell, key=_cpu_per_request)
        chosen.append(ranked[(len(ranked) - 1) // 2])
    return chosen


def _cpu_per_request(cell: Measured) -> float:
    value = cell.result.cpu_per_request if cell.result else None
    return value if value is not None else 0.0


def measure(load: Load, python: str = sys.executable) -> Result:
    """Run `load` in a fresh process (pinned to ``load.cpus``) and return what it measured.

    The process is ``python -m bench.harness``, given the load on stdin and answering on
    stdout (both pickled): no multiprocessing, so callers need no ``__main__`` guard.
    """
    done = subprocess.run(
        [python, "-m", "bench.harness"],
        input=pickle.dumps(load),
        capture_output=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")
        raise RuntimeError(f"the load process failed ({done.returncode}):\n{stderr[-3000:]}")
    result = pickle.loads(done.stdout)
    if not isinstance(result, Result):
        raise RuntimeError(f"the load process answered a {type(result).__name__}")
    return result


def run_load(load: Load) -> Result:
    """Run `load` in this process (`measure` calls it in a child process)."""
    if load.cpus:
        os.sched_setaffinity(0, load.cpus)
    set_nice(load.nice)
    return asyncio.run(_run(load))


Send = Callable[[], Awaitable[str | None]]  # None when answered OK, else what went wrong


async def _run(load: Load) -> Result:
    if load.kind == "http":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=load.concurrency)
        timeout = aiohttp.ClientTimeout(total=load.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            url, body, headers = load.target, load.body, dict(load.headers)

            async def post() -> str | None:
                async with session.post(url, data=body, headers=headers) as response:
                    answer = await response.read()
                    if response.status == 200:
                        return None
                    return f"HTTP {response.status}: {answer[:200]!r}"

            return await _drive(post, load)
    import grpc

    async with grpc.aio.insecure_channel(load.target, options=list(GRPC_OPTIONS)) as channel:
        call = channel.unary_unary(load.method, request_serializer=None, response_deserializer=None)
        body = load.body

        async def infer() -> str | None:
            try:
                await call(body, timeout=load.timeout)
            except grpc.aio.AioRpcError as exc:
                return f"gRPC {exc.code().name}: {exc.details()}"
            return None

        return await _drive(infer, load)


async def _drive(send: Send, load: Load) -> Result:
    """`load.concurrency` callers of `send` (or `load.rate` sends a second) for warm-up +
    duration; the window's figures."""
    clock = time.perf_counter
    me = os.getpid()
    server = load.server_pid
    started = clock()
    window_start = started + load.warmup
    window_end = window_start + load.duration
    done: list[tuple[float, float]] = []  # (finished at, latency) of OK answers
    failed: list[float] = []
    errors: list[str] = []
    marks: dict[str, tuple[float, tuple[float, int] | None, float, tuple[float, float]]] = {}
    watched: dict[str, list[float]] = {}

    def mark(name: str) -> None:
        # CPU counters and the clock, read together at the window's edges.
        server_stat = proc_stat(server) if server is not None else None
        watched[name] = [cpu_seconds(pid) for pid in load.watch_pids]
        marks[name] = (clock(), server_stat, cpu_seconds(me), machine_cpu_seconds())

    async def one(sent: float) -> None:
        try:
            error = await send()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        now = clock()
        if error is None:
            done.append((now, now - sent))
        else:
            failed.append(now)
            if not errors:
                errors.append(error)

    async def caller() -> None:
        while clock() < window_end:
            await one(clock())

    async def schedule(rate: float) -> None:
        # Requests are due at fixed times; latency counts from the due time, so a request
        # that waited for a free slot shows it (no coordinated omission).
        slots = asyncio.Semaphore(load.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def slotted(due: float) -> None:
            async with slots:
                await one(due)

        sent = 0
        while (now := clock()) < window_end:
            due_count = int((now - started) * rate) + 1
            while sent < due_count:
                task = asyncio.create_task(slotted(started + sent / rate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(max(0.0, started + sent / rate - clock()))
        if tasks:
            await asyncio.wait(tasks, timeout=load.timeout)

    async def edges() -> None:
        await asyncio.sleep(max(0.0, window_start - clock()))
        mark("start")
        await asyncio.sleep(max(0.0, window_end - clock()))
        mark("end")

    if load.rate:
        await asyncio.gather(edges(), schedule(load.rate))
    else:
        await asyncio.gather(edges(), *(caller() for _ in range(load.concurrency)))
    (t0, server0, client0, machine0), (t1, server1, client1, machine1) = (
        marks["start"],
        marks["end"],
    )
    latencies = sorted(latency for finished, latency in done if t0 <= finished <= t1)
    server_cpu = server_faults = None
    if server0 is not None and server1 is not None:
        server_cpu, server_faults = server1[0] - server0[0], server1[1] - server0[1]
    return Result(
        requests=len(latencies),
        errors=len(failed),
        seconds=t1 - t0,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        server_cpu=server_cpu,
        server_faults=server_faults,
        client_cpu=client1 - client0,
        machine_cpu=machine1[0] - machine0[0],
        machine_steal=machine1[1] - machine0[1],
        first_error=errors[0] if errors else None,
        watched_cpu=tuple(b - a for a, b in zip(watched["start"], watched["end"], strict=True)),
    )


def percentile(ordered: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of sorted values (NaN when there are none)."""
    if not ordered:
        return float("nan")
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil(n * pct / 100), at least 1
    return ordered[int(rank) - 1]


# Tables


def markdown_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()
) -> str:
    """A markdown table, padded for reading in a terminal; columns in `right` right-aligned."""
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    # A colon on the right of a rule right-aligns the column when the markdown is rendered.
    dashes = ["-" * (w + 1) + ":" if i in right else "-" * (w + 2) for i, w in enumerate(widths)]
    return "\n".join([line(header), "|" + "|".join(dashes) + "|", *(line(row) for row in rows)])


def ms(seconds: float | None, digits: int = 2) -> str:
    """Seconds as milliseconds text ("-" for none)."""
    if seconds is None or seconds != seconds:  # None or NaN
        return "-"
    return f"{seconds * 1000:.{digits}f}"


def verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "**FAIL**")


if __name__ == "__main__":
    # The load process of `measure`. Go through the module's own name, so that what is
    # pickled back is a `bench.harness.Result`, not a `__main__.Result`.
    from bench.harness import run_load as _run_load

    sys.stdout.buffer.write(pickle.dumps(_run_load(pickle.loads(sys.stdin.buffer.read()))))
