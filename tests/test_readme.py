"""The README's commands work: the first lines are what CI runs, the rest are run here or by
the test named for them."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from tests.examples.processes import mlserver_env, mlserver_script, started, wait_ready
from tests.hops.upstreams import free_port

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

# Every command the README shows, and what runs it (a test here, or the test file named).
COVERED = {
    "pip install -e . && gateway demo": "tests/demo/test_cli.py",
    "gateway demo": "tests/demo/test_cli.py",
    "pip install -e '.[test]' && python -m pytest": ".ci/run",
    "gateway serve --transformer scale.py:Scale": "tests/test_readme.py",
    "python examples/transformer/train.py --out /tmp/iris": "tests/test_readme.py",
    "MLSERVER_PARALLEL_WORKERS=0 mlserver start /tmp/iris": "tests/test_readme.py",
    "curl -s localhost:9080/": "tests/test_readme.py",
    "gateway serve --help": "tests/test_flags.py",
    "gateway serve --transformer transformer.py": "tests/examples/test_transformer_example.py",
    "gateway serve --graph examples/graph/graph.yaml": "tests/examples/test_graph_example.py",
    "gateway trace --url": "tests/server/test_traces_view.py",
    "python bench/server.py": "tests/test_readme.py",
    "python bench/codecs.py": "tests/test_readme.py",
    "python bench/hops.py": "tests/test_readme.py",
    "python bench/graph.py": "tests/test_readme.py",
    "python bench/startup.py": "tests/test_readme.py",
    "python bench/workers.py": "tests/test_readme.py",
    "python bench/pool.py": "tests/test_readme.py",
    "docker build -t inference-hop-gateway .": "tests/deploy/test_dockerfile.py",
    "docker compose up --build": "tests/deploy/test_compose.py",
    "scripts/check": ".ci/run",
    "scripts/gen_protos.py": "tests/test_protos.py",
    "scripts/traces_screenshot.py": "tests/server/test_traces_screenshot.py",
    "OTEL_": "tests/test_tracing_export.py",
}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    lines = [line for block in _blocks("sh") for line in block.splitlines()
             if line.strip() and not line.startswith("#")]  # fmt: skip
    inline = re.findall(r"`((?:gateway |python bench/|docker |scripts/)[^`]*)`", README)
    return lines + inline


def test_readme_opens_with_install_and_test_commands() -> None:
    install, test = _blocks("sh")[0].splitlines()
    assert README.startswith("```sh\n")
    assert install == "pip install -e . && gateway demo"
    assert test == "pip install -e '.[test]' && python -m pytest"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test = _blocks("sh")[0].splitlines()[1]
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_every_command_in_the_readme_is_run_somewhere() -> None:
    for command in _commands():
        covering = [by for prefix, by in COVERED.items() if command.startswith(prefix)]
        assert covering, f"README command not run by any test: {command}"
        for path in covering:
            assert (ROOT / path).exists(), path


def _section(title: str) -> str:
    """The README's text under the heading `title`, up to the next heading of its level."""
    level = title.split(" ", 1)[0]
    body = README.split(f"\n{title}\n", 1)[1]
    return re.split(rf"\n{level} ", body, maxsplit=1)[0]


def _sh_lines(text: str) -> list[str]:
    return [line for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)
            for line in block.splitlines() if line.strip()]  # fmt: skip


@dataclass(frozen=True)
class Ports:
    """Free ports standing in for the README's fixed ones (other tests may hold those)."""

    mlserver: dict[str, int]
    gateway: dict[str, int]

    def swap(self, text: str) -> str:
        table = {**self.mlserver, **self.gateway}
        pattern = rf"(localhost:)?\b({'|'.join(table)})\b"
        return re.sub(pattern, lambda m: f"{'127.0.0.1:' if m[1] else ''}{table[m[2]]}", text)


def _run_line(line: str, ports: Ports, iris: Path, scale: Path) -> list[str]:
    """A README command as it is written, but with the test's ports and paths."""
    line = ports.swap(line).replace("/tmp/iris", str(iris)).replace("scale.py", str(scale))
    words = shlex.split(line.removesuffix("&").strip())
    if words[0] == "python":
        words[0] = sys.executable
    elif words[0] == "gateway":
        words = [sys.executable, "-m", "gateway", *words[1:], "--listen_address", "127.0.0.1"]
    return words


def test_the_readme_transformer_runs_as_written(tmp_path: Path) -> None:
    """Every command of "Your own transformer", in order: train, MLServer, the gateway, the
    curl requests and the tritonclient script, each answer compared with the one shown."""
    section = _section("## Your own transformer")
    (source,) = [b for b in re.findall(r"```python\n(.*?)```", section, re.S)
                 if b.startswith("# scale.py")]  # fmt: skip
    scale = tmp_path / "scale.py"
    scale.write_text(source)
    iris = tmp_path / "iris"
    lines = _sh_lines(section)
    train, mlserver, serve = lines[:3]
    requests = list(zip(lines[3::2], lines[4::2], strict=True))
    assert [curl.split()[0] for curl, _ in requests] == ["curl", "curl"]
    ports = Ports(
        mlserver={"8080": free_port(), "8081": free_port(), "8082": free_port()},
        gateway={"9080": free_port(), "9081": free_port()},
    )
    subprocess.run(_run_line(train, ports, iris, scale), cwd=ROOT, check=True, timeout=120)

    # MLServer reads its ports from the environment: the README's line takes the defaults.
    env_words = shlex.split(mlserver.removesuffix("&"))
    env = dict(word.split("=", 1) for word in env_words if "=" in word and word[0].isupper())
    assert env == {"MLSERVER_PARALLEL_WORKERS": "0"}
    assert env_words[len(env) :] == ["mlserver", "start", "/tmp/iris"]
    m = ports.mlserver
    with ExitStack() as stack:
        predictor = stack.enter_context(started(
            "mlserver", [mlserver_script(), "start", str(iris)], tmp_path,
            env={**env, **mlserver_env(m["8080"], m["8081"], m["8082"])},
        ))  # fmt: skip
        gateway = stack.enter_context(
            started("gateway", _run_line(serve, ports, iris, scale), tmp_path)
        )
        wait_ready(predictor, f"http://127.0.0.1:{m['8080']}/v2/models/iris/ready")
        wait_ready(gateway, f"http://127.0.0.1:{ports.gateway['9080']}/v2/health/ready")
        assert "ready: iris" in gateway.output()
        for curl, answer in requests:
            shown = orjson.loads(answer.removeprefix("# "))
            result = _answer(_run_line(curl, ports, iris, scale))
            assert orjson.loads(result) == shown, (curl, result)
        (client,) = [b for b in re.findall(r"```python\n(.*?)```", section, re.S)
                     if "tritonclient" in b]  # fmt: skip
        printed = client.rsplit("# ", 1)[1].strip()
        result = _answer([sys.executable, "-c", ports.swap(client)])
        assert result.strip() == printed
        # One access line per call, gRPC too.
        assert '"gRPC ModelInfer iris" OK' in gateway.output()


def _answer(argv: list[str]) -> str:
    if argv[0] == "curl" and shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_start_up_refusals_are_what_the_gateway_says(tmp_path: Path) -> None:
    """Each mistake of "When it does not start", made on purpose by a real ``gateway serve``:
    the line it stops with is the README's, but for the test's port and address."""
    table = _section("### When it does not start")
    shown = re.findall(r"^\| (.+?) \| `gateway: error: ([^`]+)`", table, re.M)
    assert [mistake for mistake, _ in shown] == [
        "a port taken", "a class not in the file", "a host that is not `HOST:PORT`",
        "flags that contradict",
    ]  # fmt: skip
    (tmp_path / "scale.py").write_text("from gateway import Model\n\nclass Scale(Model): ...\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        mistakes = [
            ["--http_port", port, "--grpc_port", "0"],
            ["--transformer", "scale.py:Scael"],
            ["--predictor_host", "localhost:8080/v2"],
            ["--http_port", "9080", "--grpc_port", "9080"],
        ]
        for (mistake, expected), argv in zip(shown, mistakes, strict=True):
            if mistake == "a port taken":
                expected = expected.replace("9080", port).replace("0.0.0.0", "127.0.0.1")
            assert _refusal(argv, tmp_path) == expected, mistake


def _refusal(argv: list[str], cwd: Path) -> str:
    """The one line ``gateway serve argv`` stops with, and its exit status 2."""
    command = [sys.executable, "-m", "gateway", "serve", *argv, "--listen_address", "127.0.0.1"]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("gateway: error: ")]
    return line.removeprefix("gateway: error: ")


def test_every_link_in_the_docs_resolves_in_a_clone() -> None:
    """Relative links point at files git tracks (an ignored file is missing in a clone), and
    their #anchors at headings of that file."""
    tracked = set(subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                                 check=True).stdout.split())  # fmt: skip
    documents = ["README.md", *sorted(p for p in tracked if p.endswith(".md"))]
    for document in dict.fromkeys(documents):
        text = (ROOT / document).read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            resolved = (ROOT / document).parent / path if path else ROOT / document
            name = resolved.resolve().relative_to(ROOT).as_posix()
            assert name in tracked or any(t.startswith(f"{name}/") for t in tracked), (
                f"{document} links {target}: not in git"
            )
            if anchor:
                headings = re.findall(r"^#+ (.*)$", resolved.read_text(), re.M)
                assert anchor in {_slug(h) for h in headings}, f"{document}: #{anchor}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_readme_graph_commands_are_the_examples() -> None:
    """The graph command the README shows is run, as written, by the example's own test."""
    example = (ROOT / "examples" / "graph" / "README.md").read_text()
    shown = [command for command in _commands() if command.startswith("gateway serve --graph")]
    assert shown
    for command in shown:
        assert f"\n{command}\n" in example, command


@pytest.mark.parametrize(
    "script",
    [
        "bench/codecs.py",
        "bench/server.py",
        "bench/hops.py",
        "bench/graph.py",
        "bench/startup.py",
        "bench/workers.py",
        "bench/pool.py",
    ],
)
def test_the_benchmarks_run(script: str) -> None:
    result = subprocess.run(
        [sys.executable, script, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,  # a bound on a hung run, not a speed check: hops.py --quick takes ~60 s
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "|" in result.stdout  # it printed its table


def test_the_tests_readme_names_every_test_folder() -> None:
    """tests/README.md says what each folder proves: a new folder gets a row, a gone one
    loses it."""
    named = set(re.findall(r"^\| `(\w+)/` \|", (ROOT / "tests" / "README.md").read_text(), re.M))
    folders = {
        path.name for path in (ROOT / "tests").iterdir() if path.is_dir() and any(path.glob("*.py"))
    }
    assert named == folders
