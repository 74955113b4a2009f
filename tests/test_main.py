"""The ``gateway`` command (gateway.__main__): loading a transformer, and the subcommands."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.__main__ import IdentityTransformer, build_parser, load_transformer, main
from gateway.model import Model
from gateway.version import __version__

TRANSFORMER = """
from gateway import Model

class Scale(Model):
    pass

class NotAModel:
    pass
"""


def test_a_transformer_from_a_file_or_a_module(tmp_path: Path) -> None:
    path = tmp_path / "scale_transformer.py"
    path.write_text(TRANSFORMER)
    cls = load_transformer(f"{path}:Scale")
    assert issubclass(cls, Model)
    assert cls.__name__ == "Scale"
    assert load_transformer("gateway.__main__:IdentityTransformer") is IdentityTransformer
    with pytest.raises(ValueError, match=r"'NotAModel' in .* is not a gateway Model subclass"):
        load_transformer(f"{path}:NotAModel")
    with pytest.raises(ValueError, match="no such file"):
        load_transformer(f"{tmp_path / 'missing.py'}:Scale")
    with pytest.raises(ValueError, match=r"FILE\.py:Class or module:Class"):
        load_transformer("no-colon")


def test_the_identity_transformer_is_ready_and_only_forwards() -> None:
    model = IdentityTransformer("m")
    assert model.ready
    assert type(model).predict is Model.predict


def test_version_and_kserve_style_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.strip() == f"gateway {__version__}"
    # KServe starts a container with its flags only: that is `serve` (here refusing a bad one).
    assert main(["--model_name", "m", "--transformer", "no-colon"]) == 2
    assert "FILE.py:Class or module:Class" in capsys.readouterr().err
