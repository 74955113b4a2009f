"""The Dockerfile and .dockerignore, read without Docker."""

from __future__ import annotations

import pytest

from tests.deploy import images
from tests.examples.processes import EXAMPLE, ROOT


def values(keyword: str) -> list[str]:
    return [rest for key, rest in images.instructions() if key == keyword]


def test_base_and_user() -> None:
    [base] = values("FROM")
    assert base.startswith("python:"), base
    assert base.endswith("-slim"), base
    # Numeric and not root, so that Kubernetes' runAsNonRoot can verify it.
    [user] = values("USER")
    assert user.isdigit(), user
    assert int(user) != 0


def test_command_line_is_gateway_serve() -> None:
    assert images.entrypoint() == ["gateway"]
    assert images.exec_form("CMD") == ["serve"]
    flags = images.parse_serve([*images.entrypoint(), *images.exec_form("CMD")])
    assert sorted(values("EXPOSE")[0].split()) == sorted(
        [str(flags.http_port), str(flags.grpc_port)]
    )
    assert flags.listen_address == "0.0.0.0"  # reachable from outside the container


def test_installs_the_package() -> None:
    assert any("pip install ." in run for run in values("RUN"))


def test_build_context_has_what_the_image_needs() -> None:
    needed = [ROOT / "pyproject.toml", ROOT / "README.md", *(ROOT / "gateway").rglob("*.py")]
    needed += [*EXAMPLE.glob("*.py")]
    for path in needed:
        assert images.in_context(path), f"{path} is excluded from the build"
    for path in (ROOT / "tests" / "conftest.py", ROOT / ".git" / "HEAD", ROOT / "bench"):
        assert not images.in_context(path), f"{path} goes into the build"
    assert not images.in_context(ROOT / "gateway" / "__pycache__" / "model.cpython-312.pyc")


def test_parse_serve_refuses_what_gateway_serve_refuses() -> None:
    images.parse_serve(["gateway", "serve", "--model_name", "m"])
    with pytest.raises(AssertionError, match="refuses"):
        images.parse_serve(["gateway", "serve", "--no_such_flag", "1"])
    with pytest.raises(AssertionError, match="not a `gateway serve`"):
        images.parse_serve(["gateway", "demo"])
