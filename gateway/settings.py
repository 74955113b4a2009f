"""Server settings: one frozen value, built from flags or arguments, passed in explicitly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from gateway.codecs.limits import DecodeLimits

MIB = 1 << 20
_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class ServerSettings:
    """How the servers listen and what they accept."""

    http_port: int = 8080
    grpc_port: int = 8081
    listen_address: str = "0.0.0.0"
    workers: int = 1
    max_threads: int = 4
    max_asyncio_workers: int | None = None
    enable_grpc: bool = True
    enable_docs_url: bool = False
    enable_latency_logging: bool = True
    access_log_format: str | None = None
    grace_period: float = 30
    timeout_keep_alive: float = 65
    # Bodies and messages above these are refused (413 / RESOURCE_EXHAUSTED) unread.
    max_request_bytes: int = 256 * MIB
    grpc_max_send_message_length: int = 256 * MIB
    grpc_max_receive_message_length: int = 256 * MIB
    # How many recent traces to keep in memory for /traces; 0 turns the view off.
    trace_buffer: int = 0
    # Inference requests served at once (per process); beyond it new ones are refused at once
    # with 503 / RESOURCE_EXHAUSTED instead of queueing without bound. None: no limit.
    max_concurrency: int | None = None
    # Seconds a client may take to send its request body (a slow body holds a connection).
    request_body_timeout: float = 60
    # The model that answers ``POST /`` as KServe's graph router does (``--graph``); None:
    # ``/`` is only the liveness probe.
    root_model: str | None = None
    # Workers share the gRPC port through SO_REUSEPORT; a lone server must own its port.
    grpc_reuse_port: bool = False
    # What one request may hold besides its bytes (`gateway.codecs.limits`): JSON text,
    # values decoded one by one, JSON object members, gRPC bytes protobuf parses.
    max_json_bytes: int = _LIMITS.json_bytes
    max_request_values: int = _LIMITS.values
    max_request_keys: int = _LIMITS.keys
    grpc_max_parsed_bytes: int = _LIMITS.grpc_parsed_bytes
    # Seconds a REST client may leave its answer unread before its connection is closed.
    write_timeout: float = 30
    # Bytes of an answer queued for one REST client at once (the rest waits in memory).
    max_write_buffer: int = 1 * MIB
    # Client connections the REST server keeps open at once; None: from the process's
    # descriptor limit (see `gateway.server.connections`).
    max_connections: int | None = None

    @cached_property
    def decode_limits(self) -> DecodeLimits:
        """The limits the doors decode requests within."""
        return DecodeLimits(
            json_bytes=self.max_json_bytes,
            values=self.max_request_values,
            keys=self.max_request_keys,
            grpc_parsed_bytes=self.grpc_max_parsed_bytes,
        )

    @classmethod
    def chosen(
        cls, flags: Mapping[str, Any], given: Mapping[str, Any], extra: frozenset[str]
    ) -> tuple[ServerSettings, dict[str, Any]]:
        """The settings a caller `given` (None: not given) and else the `flags` choose, and
        the `extra` options beside them; an option that is neither raises TypeError."""
        fields = set(cls.__dataclass_fields__)
        unknown = set(given) - fields - extra
        if unknown:
            raise TypeError(f"unknown ModelServer options: {', '.join(sorted(unknown))}")
        chosen = {
            key: flags[key] if given.get(key) is None else given[key]
            for key in fields | extra
            if key in flags or given.get(key) is not None
        }
        settings = cls(**{k: v for k, v in chosen.items() if k in fields})
        return settings, {k: v for k, v in chosen.items() if k in extra}
