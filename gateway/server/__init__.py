"""The front doors: a REST server (aiohttp) and a gRPC server (grpc.aio) over one DataPlane."""
