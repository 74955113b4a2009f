"""Saying "ready" when the server is: when ``/v2/health/ready`` would answer 200, not when the
models have merely loaded (a model may have failed to load, or, with
``--enable_predictor_health_check``, wait for its predictor)."""

from __future__ import annotations

import asyncio
import logging

from gateway.dataplane import DataPlane

__all__ = ["POLL_SECONDS", "announce"]

logger = logging.getLogger("gateway.model_server")

# How often readiness is asked again until it holds (a predictor probe each time at most).
POLL_SECONDS = 0.5


async def announce(dataplane: DataPlane, names: str) -> None:
    """Log ``ready: <names>`` once the server is ready; until then, once, why it is not.
    Returns when ready or when the server begins to stop (cancel it with the server)."""
    waited = False
    while not dataplane.draining:
        if await dataplane.ready():
            logger.info("ready: %s", names)
            return
        if not waited:
            waited = True
            logger.warning("not ready yet: %s", await _why(dataplane))
        await asyncio.sleep(POLL_SECONDS)


async def _why(dataplane: DataPlane) -> str:
    repository = dataplane.repository
    failed, waiting = [], []
    for name in repository.get_models():
        if not await repository.is_model_ready(name):
            failed.append(name)
        elif not await dataplane.model_ready(name):
            waiting.append(name)
    reasons = []
    if failed:
        reasons.append(f"{', '.join(failed)} did not load (see above)")
    if waiting:
        reasons.append(
            f"the predictor of {', '.join(waiting)} is not ready "
            "(--enable_predictor_health_check); waiting for it"
        )
    return "; ".join(reasons) or "the server is starting"
