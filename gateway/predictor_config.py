"""`PredictorConfig`: where a transformer's predictor is and how to reach it (KServe's API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.hops.settings import PROTOCOLS


@dataclass(frozen=True)
class PredictorConfig:
    """The predictor a transformer forwards to, as KServe's ``--predictor_*`` flags set it."""

    predictor_host: str | None
    predictor_protocol: str = "v1"
    predictor_use_ssl: bool = False
    predictor_request_timeout_seconds: float = 600
    predictor_request_retries: int = 0
    predictor_health_check: bool = False

    def __post_init__(self) -> None:
        if self.predictor_protocol not in PROTOCOLS:
            raise ValueError(
                f"predictor_protocol must be one of {', '.join(PROTOCOLS)}, "
                f"got {self.predictor_protocol!r}"
            )

    @classmethod
    def from_flags(cls, args: Any) -> PredictorConfig | None:
        """The config KServe's ``--predictor_*`` flags give; None without a host."""
        if not args.predictor_host:
            return None
        return cls(
            predictor_host=args.predictor_host,
            predictor_protocol=args.protocol or args.predictor_protocol,
            predictor_use_ssl=args.predictor_use_ssl,
            predictor_request_timeout_seconds=args.predictor_request_timeout_seconds,
            predictor_request_retries=args.predictor_request_retries,
            predictor_health_check=args.enable_predictor_health_check,
        )

    @property
    def predictor_base_url(self) -> str:
        scheme = "https" if self.predictor_use_ssl else "http"
        return f"{scheme}://{self.predictor_host}"

    # KServe's older names for the same settings.
    @property
    def protocol(self) -> str:
        return self.predictor_protocol

    @property
    def timeout(self) -> float:
        return self.predictor_request_timeout_seconds

    @property
    def retries(self) -> int:
        return self.predictor_request_retries

    @property
    def use_ssl(self) -> bool:
        return self.predictor_use_ssl
