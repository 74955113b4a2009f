"""Third-party peers in virtual environments of their own, created and filled on first use.

KServe is the peer of the benchmarks (`bench/server.py`, `bench/hops.py`) and of the exactness
tests (`tests/peers/`). It goes into ``bench/.venv-kserve`` (gitignored), never into ours, so
its pins cannot clash with ours; later runs in the same checkout find it there. Several
processes may ask at once (a benchmark and a test run): one installs, the others wait for it.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KSERVE_VERSION = "0.21.0"
KSERVE_SPEC = f"kserve=={KSERVE_VERSION}"
KSERVE_VENV = ROOT / "bench" / ".venv-kserve"
_KSERVE_PROBE = (
    "import importlib.metadata as m, kserve; "
    f"assert m.version('kserve') == {KSERVE_VERSION!r}, m.version('kserve')"
)


class InstallFailed(RuntimeError):
    """The environment could not be created, or pip could not install into it (no index
    reachable, no release for this Python ...): the message ends with the tool's own words."""


def kserve_python(spec: str = KSERVE_SPEC, venv: Path = KSERVE_VENV) -> Path:
    """KServe's interpreter, installing `spec` into `venv` on first use."""
    return venv_python(venv, [spec], _KSERVE_PROBE)


def venv_python(venv: Path, requirements: Sequence[str], probe: str) -> Path:
    """The interpreter of virtual environment `venv`, created and filled on first use.

    `probe` is Python code that exits 0 when the environment already has what it needs;
    otherwise `requirements` are pip-installed into it. Progress goes to stderr. Raises
    `InstallFailed` when venv or pip fail, RuntimeError when the probe still fails after.
    """
    python = venv / "bin" / "python"
    venv.mkdir(parents=True, exist_ok=True)
    with open(venv / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if python.exists() and _runs(python, probe):
            return python
        if not python.exists():
            print(f"creating {venv} ...", file=sys.stderr, flush=True)
            _run([sys.executable, "-m", "venv", str(venv)])
        print(f"pip install {' '.join(requirements)} into {venv} ...", file=sys.stderr, flush=True)
        _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              *requirements])  # fmt: skip
        if not _runs(python, probe):
            raise RuntimeError(f"{venv}: installed {list(requirements)}, but `{probe}` fails")
    return python


def _run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip())[-1500:]
        raise InstallFailed(f"`{' '.join(argv[:4])} ...` exited {done.returncode}: {said}")


def _runs(python: Path, code: str) -> bool:
    done = subprocess.run([str(python), "-c", code], capture_output=True, check=False)
    return done.returncode == 0
