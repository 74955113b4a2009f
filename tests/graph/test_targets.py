"""Step URLs: the forms KServe's controller writes into ``serviceUrl``, and gRPC ones."""

from __future__ import annotations

import pytest

from gateway.graph import StepTarget, parse_service_url, resolve_service


@pytest.mark.parametrize(
    ("url", "target"),
    [
        # KServe's controller: a v1 InferenceService's predictor
        ("http://sklearn-iris.default.svc.cluster.local/v1/models/sklearn-iris:predict",
         StepTarget("", "v1", "sklearn-iris.default.svc.cluster.local:80", "sklearn-iris")),
        # ... and a v2 one
        ("http://xgb.default.svc.cluster.local/v2/models/xgb/infer",
         StepTarget("", "v2", "xgb.default.svc.cluster.local:80", "xgb")),
        ("https://127.0.0.1:8443/v2/models/m/versions/3/infer",
         StepTarget("", "v2", "127.0.0.1:8443", "m", "3", use_ssl=True)),
        ("http://[::1]:8080/v1/models/a%2Fb:predict",
         StepTarget("", "v1", "[::1]:8080", "a/b")),
        ("grpc://127.0.0.1:8081/iris", StepTarget("", "grpc-v2", "127.0.0.1:8081", "iris")),
        ("grpc://127.0.0.1:8081/v2/models/iris/infer",
         StepTarget("", "grpc-v2", "127.0.0.1:8081", "iris")),
        ("grpcs://model.example/v2/models/iris/versions/2",
         StepTarget("", "grpc-v2", "model.example:443", "iris", "2", use_ssl=True)),
    ],
)  # fmt: skip
def test_url_forms(url: str, target: StepTarget) -> None:
    parsed = parse_service_url(url)
    assert parsed == StepTarget(url, *list(vars(target).values())[1:])


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://model.default", "names no model"),
        ("http://h/v1/models/m:explain", "names no model"),
        ("http://h/v2/models/m/ready", "names no model"),
        ("grpc://h:8081", "names no model"),
        ("ftp://h/v1/models/m:predict", "is not one of"),
        ("/v1/models/m:predict", "is not one of"),
        ("http://h:port/v1/models/m:predict", "is malformed"),
        ("http://h/v1/models/m:predict?x=1", "has a query or fragment"),
    ],
)
def test_urls_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_service_url(url)


def test_service_names_resolve_through_the_mapping() -> None:
    services = {"iris": "grpc://127.0.0.1:9000/iris"}
    assert resolve_service("iris", services).host == "127.0.0.1:9000"
    with pytest.raises(ValueError, match=r"no URL for service 'rose' \(services known: iris\)"):
        resolve_service("rose", services)


def test_a_step_url_may_name_a_pool_of_replicas() -> None:
    target = parse_service_url("http://10.0.0.1:8080,10.0.0.2:8080,pods.ns/v2/models/m/infer")
    assert (target.protocol, target.model_name) == ("v2", "m")
    assert target.host == "10.0.0.1:8080,10.0.0.2:8080,pods.ns:80"
    assert parse_service_url("grpcs://a:1,b/m").host == "a:1,b:443"
    with pytest.raises(ValueError, match="listed twice"):
        parse_service_url("http://a:1,a:1/v1/models/m:predict")
