"""The OpenAPI document and the docs page (server.openapi)."""

from __future__ import annotations

from gateway.server.rest import routes
from gateway.settings import ServerSettings
from tests.server.rest_support import (
    Served,
    assert_serving,
    error_of,
    serve,
)

# Docs


async def test_openapi_documents_every_route(served: Served) -> None:
    async with served.session.get("/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"].startswith("3.")
    documented = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    served_routes = {
        (route.method, route.resource.canonical)
        for route in served.app.router.routes()
        if route.resource is not None
    }
    assert documented == served_routes
    assert {(route.method, route.path) for route in routes(docs=True)} == documented
    operation_ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(set(operation_ids))
    infer = document["paths"]["/v2/models/{name}/infer"]["post"]
    assert "application/octet-stream" in infer["requestBody"]["content"]
    assert [p["name"] for p in infer["parameters"]] == ["name"]


async def test_docs_page_lists_the_endpoints_without_a_cdn(served: Served) -> None:
    async with served.session.get("/docs") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert "/v2/models/{name}/infer" in page
    assert "/v1/models/{name}:predict" in page
    assert "<script" not in page
    assert "https://" not in page


async def test_docs_are_404_when_disabled() -> None:
    settings = ServerSettings(listen_address="127.0.0.1", enable_docs_url=False)
    async with serve(settings) as served:
        for path in ("/docs", "/openapi.json"):
            async with served.session.get(path) as response:
                assert response.status == 404
                assert path in await error_of(response)
        await assert_serving(served.session)
