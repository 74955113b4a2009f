"""A server script written the way KServe's examples are, for tests that run real processes.

Only the imports differ from a KServe script. Extra flags: --delay (seconds predict takes)
and --load_delay (seconds load() takes).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from gateway import model_server
from gateway.model_server import ModelServer
from tests.models import EchoModel

parser = argparse.ArgumentParser(parents=[model_server.parser])
parser.add_argument("--delay", type=float, default=0.0)
parser.add_argument("--load_delay", type=float, default=0.0)
args, _ = parser.parse_known_args()


class SlowLoadingEcho(EchoModel):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = False

    def load(self) -> bool:
        time.sleep(args.load_delay)
        self.ready = True
        return self.ready

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        if args.delay:
            import asyncio

            await asyncio.sleep(args.delay)
        return await super().predict(payload, headers)


if __name__ == "__main__":
    ModelServer().start([SlowLoadingEcho(args.model_name)])
