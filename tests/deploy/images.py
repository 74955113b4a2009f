"""What the Dockerfile and .dockerignore say, read without Docker: the instructions, the
image's command line, and which files of the build context reach the build."""

from __future__ import annotations

import argparse
import json
import re
from functools import cache
from pathlib import Path

from gateway.__main__ import build_parser
from tests.examples.processes import ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@cache
def instructions() -> tuple[tuple[str, str], ...]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return tuple(found)


def exec_form(keyword: str) -> list[str]:
    """The last `keyword` instruction (ENTRYPOINT, CMD), which must be in exec (JSON) form."""
    values = [rest for key, rest in instructions() if key == keyword]
    assert values, f"the Dockerfile has no {keyword}"
    parsed = json.loads(values[-1])
    assert isinstance(parsed, list), f"{keyword} must be a JSON list (exec form)"
    return [str(item) for item in parsed]


def entrypoint() -> list[str]:
    return exec_form("ENTRYPOINT")


def parse_serve(argv: list[str]) -> argparse.Namespace:
    """The flags of a ``gateway serve ...`` (or ``python -m gateway serve ...``) command
    line, as the gateway's own parser reads them: a flag it does not take fails the test."""
    if argv[:3] == ["python", "-m", "gateway"]:
        argv = ["gateway", *argv[3:]]
    assert argv[:2] == ["gateway", "serve"], f"not a `gateway serve` command line: {argv}"
    try:
        return build_parser().parse_args(argv[1:])
    except SystemExit:  # what argparse does with a flag or value it does not take
        raise AssertionError(f"`gateway serve` refuses {argv[2:]} (see stderr)") from None


def _pattern(glob: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker matches it (Go's filepath.Match, plus ``**``)."""
    out = []
    index = 0
    while index < len(glob):
        char = glob[index]
        if glob.startswith("**", index):
            out.append(".*")
            index += 2
            if glob.startswith("/", index):
                out.append("/?")
                index += 1
            continue
        out.append({"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char)))
        index += 1
    return re.compile("".join(out) + r"\Z")


@cache
def _rules() -> tuple[tuple[bool, re.Pattern[str]], ...]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        rules.append((include, _pattern(line.lstrip("!").strip("/"))))
    return tuple(rules)


def in_context(path: Path) -> bool:
    """Whether `path` (in the repository) is sent to the build: the last rule that matches
    it or one of its parent directories decides."""
    relative = path.resolve().relative_to(ROOT).as_posix()
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for include, pattern in _rules():
        if any(pattern.match(prefix) for prefix in prefixes):
            included = include
    return included
