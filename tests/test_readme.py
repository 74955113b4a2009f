"""The README's first lines are the commands a new user runs; CI runs the test command."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0].startswith("```")
    end = lines.index("```", 1)
    return lines[1:end]


def test_readme_opens_with_install_and_test_commands() -> None:
    install, test = _readme_commands()
    assert install.startswith("pip install -e . && gateway ")
    assert "pytest" in test


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    _, test = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
