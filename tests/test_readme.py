"""The README's commands work: the first lines are what CI runs, the rest are run here or by
the test named for them."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from gateway import InferInput, InferRequest
from tests.server.procs import run_server

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()

# Every command the README shows, and what runs it (a test here, or the test file named).
COVERED = {
    "pip install -e . && gateway demo": "tests/demo/test_cli.py",
    "gateway demo": "tests/demo/test_cli.py",
    "pip install -e '.[test]' && python -m pytest": ".ci/run",
    "gateway serve --transformer scale.py:Scale": "tests/test_readme.py",
    "gateway serve --transformer transformer.py": "tests/examples/test_transformer_example.py",
    "gateway trace --url": "tests/server/test_traces_view.py",
    "python bench/server.py": "tests/test_readme.py",
    "python bench/codecs.py": "tests/test_readme.py",
    "python bench/hops.py": "tests/test_readme.py",
    "python bench/pool.py": "tests/test_readme.py",
    "docker build -t inference-hop-gateway .": "tests/deploy/test_dockerfile.py",
    "docker compose up --build": "tests/deploy/test_compose.py",
    "scripts/check": ".ci/run",
    "scripts/gen_protos.py": "tests/test_protos.py",
    "OTEL_": "tests/test_tracing_export.py",
}


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    lines = [line for block in _blocks("sh") for line in block.splitlines() if line.strip()]
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_readme_transformer_runs_as_shown(tmp_path: Path) -> None:
    (source,) = [block for block in _blocks("python") if block.startswith("# scale.py")]
    (tmp_path / "scale.py").write_text(source)
    (serve,) = [line for line in _blocks("sh")[1].splitlines() if line.startswith("gateway")]
    with run_server("tests.apps.kserve_style", "--http_port", "0", "--grpc_port", "0",
                    "--model_name", "mnist") as predictor:  # fmt: skip
        http, grpc_port = _free_port(), _free_port()
        args = serve.split()[1:]
        args = [a.replace("scale.py", str(tmp_path / "scale.py")) for a in args]
        args[args.index("localhost:9081")] = f"127.0.0.1:{predictor.grpc_port}"
        args[args.index("8080")] = str(http)
        args[args.index("8082")] = str(grpc_port)
        with run_server("gateway", *args) as gateway:
            pixels = InferInput("pixels", [2, 3], "FP32")
            pixels.set_data_from_numpy(
                np.array([[0, 255, 51], [102, 0, 0]], dtype=np.float32), binary_data=False
            )
            body, _ = InferRequest("mnist", [pixels]).to_rest()
            url = f"{gateway.base_url}/v2/models/mnist/infer"
            async with aiohttp.ClientSession() as session:
                for _ in range(100):  # the transformer is ready once its hop is connected
                    async with session.get(f"{gateway.base_url}/v2/health/ready") as ready:
                        if ready.status == 200:
                            break
                    await asyncio.sleep(0.05)
                async with session.post(url, json=body) as response:
                    assert response.status == 200, await response.text()
                    outputs = {o["name"]: o for o in (await response.json())["outputs"]}
    assert outputs["pixels"]["data"] == pytest.approx([0.0, 1.0, 0.2, 0.4, 0.0, 0.0])
    assert outputs["top"]["data"] == [1, 0]


@pytest.mark.parametrize(
    "script", ["bench/codecs.py", "bench/server.py", "bench/hops.py", "bench/pool.py"]
)
def test_the_benchmarks_run(script: str) -> None:
    result = subprocess.run(
        [sys.executable, script, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
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
