"""``gateway demo`` as a user runs it: a real process that starts six more (a transformer
chain and an inference graph), loads them, prints the latency tables and stops them all; and
stops them all on Ctrl-C too."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from gateway.demo.cli import new_log_dir

ROOT = Path(__file__).resolve().parents[2]
_LOG_DIR = re.compile(r"\(logs in (\S+)\)")
_STARTED = re.compile(r"started (\S+) .*: pid (\d+), REST 127\.0\.0\.1:(\d+)")
# Every row the prediction and explanation tables must have.
HOP_ROWS = [
    "A.server",
    "A.preprocess",
    "A.hop.predictor",
    "A->B wire",
    "B.server",
    "B.hop.predictor",
    "B->predictor wire",
    "predictor.server",
    "predictor.predict",
    "A.postprocess",
]
# The graph's rows: each node and step, both branches of its Switch, both classifiers of
# its Ensemble, each reached through its own hop.
GRAPH_ROWS = {
    "G.node.root": 10,
    "G.step.root.logistic": 5,
    "G.step.root.ensemble": 5,
    "G.node.ensemble": 5,
    "G.step.ensemble.logistic": 5,
    "G.step.ensemble.centroids": 5,
    "G.hop.centroids": 5,
    "G->centroids wire": 5,
    "centroids.predict": 5,
    "G.postprocess": 10,
}
EXPLAIN_ROWS = [
    "A.hop.explainer",
    "A->explainer wire",
    "explainer.server",
    "explainer.explain",
]


@dataclass
class Demo:
    process: subprocess.Popen[str]
    stderr: list[str] = field(default_factory=list)
    stdout_lines: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def stdout(self) -> str:
        return "".join(self.stdout_lines)

    def finish(self, timeout: float) -> int:
        """Wait for the demo to exit and for its output to be read to the end."""
        code = self.process.wait(timeout)
        for reader in self.readers:
            reader.join(10)
        return code

    def children(self) -> dict[str, int]:
        """Service label -> pid, from the demo's "started ..." lines."""
        found = (_STARTED.search(line) for line in list(self.stderr))
        return {m.group(1): int(m.group(2)) for m in found if m}

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.stderr)):
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)

    def output(self) -> str:
        return f"stdout:\n{self.stdout}\nstderr:\n{''.join(self.stderr)}"

    def strays(self) -> set[int]:
        """Processes whose command line names this run's log folder (the graph's gateway
        reads its graph from there), whoever their parent is now."""
        found = (_LOG_DIR.search(line) for line in list(self.stderr))
        folder = next((m.group(1) for m in found if m), None)
        return _running_with(folder) if folder else set()


@contextmanager
def demo(*args: str) -> Iterator[Demo]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Demo(process)

    def read(stream: IO[str] | None, lines: list[str]) -> None:
        assert stream is not None
        with stream:
            for line in stream:
                lines.append(line)

    for stream, lines in ((process.stdout, running.stdout_lines), (process.stderr, running.stderr)):
        reader = threading.Thread(target=read, args=(stream, lines), daemon=True)
        reader.start()
        running.readers.append(reader)
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        # Never leave a child behind a failed test.
        for pid in {*running.children().values(), *running.strays()}:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        running.finish(10)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone: it has exited, only its status is left)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _running_with(text: str) -> set[int]:
    """The pids of live processes whose command line holds `text`, from /proc."""
    own = str(os.getpid())

    def names(entry: Path) -> bool:
        command = (entry / "cmdline").read_bytes().decode(errors="replace")
        return entry.name != own and text in command and _alive(int(entry.name))

    return _pids_where(names)


def _children_of(pid: int) -> set[int]:
    """The pids whose parent is `pid`, from /proc."""

    def child(entry: Path) -> bool:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid

    return _pids_where(child)


def _pids_where(test: Callable[[Path], bool]) -> set[int]:
    """The pids whose /proc entry passes `test` (one that ends meanwhile does not)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if test(entry):
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _row(out: str, name: str) -> list[str]:
    match = re.search(rf"^ +{re.escape(name)} +(\d+) +([\d.]+) +([\d.]+)", out, re.MULTILINE)
    assert match, f"no row {name!r} in:\n{out}"
    return list(match.groups())


def test_demo_runs_to_completion_and_reports_every_hop() -> None:
    with demo("--requests", "30") as running:
        assert running.finish(120) == 0, running.output()
        out = running.stdout
        for name in HOP_ROWS:
            count, p50, p99 = _row(out, name)
            assert int(count) == 30  # each prediction, not the warm-up ones
            assert 0 <= float(p50) <= float(p99)
        for name in EXPLAIN_ROWS:
            assert int(_row(out, name)[0]) >= 1
        # Each graph request: one in three predictions, by turns to each branch.
        for name, count in GRAPH_ROWS.items():
            assert int(_row(out, name)[0]) == count, name
        for kind in ("rest-json", "rest-binary", "grpc", "explain", "graph", "graph-ensemble"):
            assert re.search(rf"^ +{kind} +\d+ +[\d.]+ +[\d.]+ +0$", out, re.MULTILINE), out
        assert re.search(r"^41 requests in [\d.]+ s: [\d.]+ requests/s, errors: 0$", out, re.M)
        assert "A typical request" in out
        assert "A typical request to the graph's Ensemble" in out
        assert "/traces" in out
        assert "gateway trace --url" in out
        html = re.search(r"file://(\S+)", out)
        assert html, out
        page = Path(html.group(1)).read_text()
        assert page.count('<section class="waterfall"') == 41
        assert "step ensemble.centroids" in page
        children = running.children()
        assert set(children) == {"predictor", "centroids", "explainer", "B", "G", "A"}
        assert not [pid for pid in children.values() if _alive(pid)]


@pytest.mark.parametrize("moment", ["started predictor", "requests ["])
def test_ctrl_c_stops_every_child_and_exits_130(moment: str) -> None:
    with demo("--requests", "100000") as running:
        running.wait_for(moment)
        children = running.children()
        if moment == "requests [":
            assert len(children) == 6
            # The demo reports every process it started, and started no others.
            assert set(children.values()) == _children_of(running.process.pid)
        spawned = _children_of(running.process.pid)  # those not yet reported too
        running.process.send_signal(signal.SIGINT)
        assert running.finish(30) == 130, running.output()
        spawned |= set(running.children().values())  # and any started as the signal came
        assert spawned
        assert not [pid for pid in spawned if _alive(pid)], running.output()
        assert not running.strays(), running.output()  # one started as the signal came
        assert "interrupted" in "".join(running.stderr)


def test_a_run_keeps_only_the_last_runs_folder(tmp_path: Path) -> None:
    """Each run's logs and HTML go to a new folder; a finished run's folder goes when the
    next run starts (one whose demo still runs, or that is not the demo's, stays)."""
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)  # fmt: skip
    first = new_log_dir(tmp_path)
    (first / "demo.pid").write_text(finished.stdout.strip())  # as if that run had ended
    running = new_log_dir(tmp_path)  # this process: still running
    foreign = tmp_path / "gateway-demo-by-hand"
    foreign.mkdir()
    latest = new_log_dir(tmp_path)
    assert not first.exists()
    assert running.exists()
    assert foreign.exists()
    assert (latest / "demo.pid").read_text() == str(os.getpid())
