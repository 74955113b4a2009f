"""How to reach one upstream: a frozen value per hop, built once (from the flags, say) and
taken as it is by the hop's transport and wrappers."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.hops.pool import PoolSettings

# "auto": asked of the upstream (`gateway.hops.auto`).
PROTOCOLS = ("v1", "v2", "grpc-v2", "auto")
REST_FORMATS = ("auto", "json", "binary")


@dataclass(frozen=True)
class RetryPolicy:
    """What is retried and how long to wait between attempts."""

    # Retries after the first attempt (KServe's --predictor_request_retries).
    retries: int = 0
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    # A timed-out request may still be running upstream; repeating it is opt-in.
    retry_on_timeout: bool = False
    # Seconds all attempts and waits of one call may take together, so that an upstream's
    # long Retry-After cannot hold a request that has no deadline of its own.
    budget: float | None = None


@dataclass(frozen=True)
class HopSettings:
    """One upstream: where it is, which protocol it speaks, and the limits of a call."""

    # What the upstream is to us ("predictor", "explainer"): names the hop in spans, metrics,
    # timings and error messages.
    role: str
    host: str
    # The model's name at the upstream (its URLs, the messages sent there) and the hops'
    # metrics label; "" sends each request under its own model name.
    model_name: str = ""
    protocol: str = "v1"
    use_ssl: bool = False
    # Seconds for one call, capped by the inbound request's own deadline.
    timeout: float = 600
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # REST v2 body towards the upstream: JSON, the binary extension, or "auto": binary only
    # when the upstream's metadata lists the extension (Triton, ours; not MLServer, KServe).
    rest_format: str = "auto"
    # Whether requests are checked against the inputs the upstream's model metadata declares
    # (off for servers whose metadata is wrong).
    validate_inputs: bool = True
    # Inbound headers passed on besides x-request-id and trace context (lowercase names).
    forward_headers: frozenset[str] = frozenset()
    # Authorization is credentials for *this* gateway; passing it on must be asked for.
    forward_authorization: bool = False
    max_connections: int = 100
    # Bytes of one answer taken from the upstream (REST or gRPC); a larger one is a 502.
    max_response_bytes: int = 256 << 20
    # TLS to the upstream is verified against the system's CAs, or this file's.
    ca_file: str | None = None
    # How the replicas of `host` (``host:port,host:port``, or a name with several
    # addresses) are balanced, ejected, checked and limited.
    pool: PoolSettings = field(default_factory=PoolSettings)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"{self.role} protocol must be one of {', '.join(PROTOCOLS)}")
        if self.rest_format not in REST_FORMATS:
            raise ValueError(f"rest format must be one of {', '.join(REST_FORMATS)}")

    @property
    def base_url(self) -> str:
        """``scheme://host:port`` for REST; KServe accepts a bare host (port 80/443)."""
        if "://" in self.host:
            return self.host.rstrip("/")
        return f"{'https' if self.use_ssl else 'http'}://{self.host}"

    @property
    def target(self) -> str:
        """``host:port`` for gRPC."""
        host = self.host.split("://", 1)[-1].rstrip("/")
        if ":" not in host.rsplit("]", 1)[-1]:
            host += ":443" if self.use_ssl else ":80"
        return host
