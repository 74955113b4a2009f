"""What an upstream's metadata tells a hop (`gateway.hops.facts`)."""

from __future__ import annotations

from gateway.codecs.validate import TensorSpec
from gateway.hops.facts import Learner, UpstreamFacts, declared_inputs, takes_binary


def test_binary_only_for_servers_that_take_it() -> None:
    assert takes_binary({"name": "triton", "extensions": ["binary_tensor_data"]})
    assert takes_binary({"name": "inference-hop-gateway", "extensions": ["binary_tensor_data"]})
    assert takes_binary({"name": "kserve", "extensions": ["model_repository_extension"]})
    assert not takes_binary({"name": "mlserver", "extensions": []})
    assert not takes_binary({})


def test_declared_inputs_only_when_checkable() -> None:
    metadata = {"inputs": [{"name": "x", "datatype": "fp32", "shape": [-1, 2]}]}
    assert declared_inputs(metadata) == {"x": TensorSpec("x", "FP32", (-1, 2))}
    assert declared_inputs({"inputs": []}) is None
    assert declared_inputs({"inputs": [{"name": "x", "datatype": "FP32"}]}) is None
    assert declared_inputs(None) is None


async def test_inputs_are_not_kept_when_validation_is_off() -> None:
    inputs = {"x": TensorSpec("x", "FP32", (2,))}

    async def probe(timeout: float) -> UpstreamFacts:
        return UpstreamFacts(("v2",), True, "s", inputs)

    kept, dropped = (
        Learner(probe, "predictor", "a"),
        Learner(probe, "predictor", "a", keep_inputs=False),
    )
    assert (await kept.learned()).inputs == inputs
    facts = await dropped.learned()
    assert (facts.protocols, facts.binary, facts.inputs) == (("v2",), True, None)
