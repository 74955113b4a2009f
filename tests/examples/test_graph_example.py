"""examples/graph as its README tells a user to run it: every command of the README, in order,
run as written (its ports swapped for free ones, `localhost` for 127.0.0.1); each answer
shown in the README must hold what the README shows, and the classifiers' own numbers."""

from __future__ import annotations

import re
import shlex
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from gateway.demo.graph import GRAPH
from gateway.demo.models import centroid_probabilities, probabilities
from tests.examples.processes import ROOT, Process, started, wait_ready
from tests.hops.upstreams import free_port

EXAMPLE = ROOT / "examples" / "graph"
README = (EXAMPLE / "README.md").read_text()
# The ports the README uses; the graph's own are gateway serve's defaults.
PORTS = (8080, 8081, 9000, 9001, 9010, 9011)


def test_the_example_graph_is_the_demos() -> None:
    assert (EXAMPLE / "graph.yaml").read_text() == GRAPH


def commands() -> list[tuple[str, str | None]]:
    """Each command of the README's sh blocks, in order, with the comment line after it
    (what the README shows it answers), if any."""
    found: list[tuple[str, str | None]] = []
    for block in re.findall(r"```sh\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            if line.startswith("# ") and found and found[-1][1] is None:
                if line.startswith("# {"):
                    found[-1] = (found[-1][0], line[2:])
            elif line.strip() and not line.startswith("#"):
                found.append((line, None))
    return found


class Session:
    """What a user's shell would hold: the processes started with `&`, by REST port."""

    def __init__(self, stack: ExitStack, logs: Path) -> None:
        self.stack = stack
        self.logs = logs
        self.ports = {port: free_port() for port in PORTS}
        self.processes: dict[int, Process] = {}

    def local(self, text: str) -> str:
        text = text.replace("localhost", "127.0.0.1")
        ports = "|".join(map(str, PORTS))
        return re.sub(rf"\b({ports})\b", lambda m: str(self.ports[int(m[1])]), text)

    def serve(self, line: str) -> None:
        argv = shlex.split(self.local(line.rstrip(" &")))
        assert argv[:2] == ["gateway", "serve"], line
        if "--http_port" not in argv:
            argv += ["--http_port", str(self.ports[8080]), "--grpc_port", str(self.ports[8081])]
        http = int(argv[argv.index("--http_port") + 1])
        if http in self.processes:  # "Stop the graph above"
            self.processes.pop(http).terminate()
            self.wait_closed(http)
        command = [sys.executable, "-m", "gateway", *argv[1:], "--listen_address", "127.0.0.1"]
        process = self.stack.enter_context(started(f"serve-{http}", command, self.logs))
        self.processes[http] = process

    def wait_ready(self) -> None:
        for port, process in self.processes.items():
            wait_ready(process, f"http://127.0.0.1:{port}/v2/health/ready")

    def wait_closed(self, port: int) -> None:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            except OSError:
                return
            time.sleep(0.05)
        pytest.fail(f"port {port} still answers after its process was stopped")

    def curl(self, line: str) -> Any:
        argv = shlex.split(self.local(line))
        assert argv[0] == "curl", line
        headers, body, url = {}, None, None
        words = iter(argv[1:])
        for word in words:
            if word == "-H":
                name, _, value = next(words).partition(":")
                headers[name.strip()] = value.strip()
            elif word == "-d":
                body = next(words).encode()
            elif not word.startswith("-"):
                url = "http://" + word
        assert url is not None, line
        request = urllib.request.Request(url, data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            return orjson.loads(response.read())


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[Any, str]]]:
    """Every curl's answer, with what the README shows for it."""
    found = []
    with ExitStack() as stack:
        session = Session(stack, tmp_path_factory.mktemp("logs"))
        for line, shown in commands():
            if line.startswith("gateway serve"):
                session.serve(line)
            else:
                session.wait_ready()
                found.append((session.curl(line), shown or ""))
        yield found


def strings(value: Any) -> set[str]:
    """Every key and string value in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {s for item in value.values() for s in strings(item)}
    if isinstance(value, list):
        return {s for item in value for s in strings(item)}
    return {value} if isinstance(value, str) else set()


def test_every_answer_holds_what_the_readme_shows(answers: list[tuple[Any, str]]) -> None:
    assert len(answers) == 4
    for answer, shown in answers:
        assert shown, "each request in the README shows its answer"
        # The README abbreviates numbers and lists ("..."): its strings must all be there.
        assert set(re.findall(r'"([^"]*)"', shown)) <= strings(answer), (shown, answer)


def rows(*flower: float) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.array([flower], dtype=np.float32)


def test_the_answers_are_the_classifiers(answers: list[tuple[Any, str]]) -> None:
    one, both, v2, averaged = (answer for answer, _ in answers)
    setosa = rows(-0.9, 1.02, -1.34, -1.31)
    np.testing.assert_allclose(one["outputs"][0]["data"], probabilities(setosa)[0], rtol=1e-5)
    flower = rows(0.67, 0.33, 0.42, 0.4)
    logistic, centroids = probabilities(flower)[0], centroid_probabilities(flower)[0]
    np.testing.assert_allclose(both["logistic"]["outputs"][0]["data"], logistic, rtol=1e-5)
    np.testing.assert_allclose(both["centroids"]["outputs"][0]["data"], centroids, rtol=1e-5)
    outputs = {output["name"]: output["data"] for output in v2["outputs"]}
    np.testing.assert_allclose(outputs["logistic.probabilities"], logistic, rtol=1e-5)
    np.testing.assert_allclose(outputs["centroids.probabilities"], centroids, rtol=1e-5)
    # The classifiers disagree on this flower, as the README says; the average decides.
    assert (logistic.argmax(), centroids.argmax()) == (1, 2)
    labels = {output["name"]: output["data"] for output in averaged["outputs"]}
    assert labels["label"] == ["versicolor"]
