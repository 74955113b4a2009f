"""The services of the graph tests, as one server script written as KServe's examples are:
``double`` and ``triple`` (scale what they get), ``dog`` and ``cat`` (say which they are),
``busy`` (always 503), ``flaky`` (503 to the first attempt of each request), ``slow``
(answers after a minute)."""

from __future__ import annotations

from gateway.model_server import ModelServer
from tests.models import Animal, Busy, Flaky, Scale, SlowModel

if __name__ == "__main__":
    ModelServer().start(
        [
            Scale("double", 2),
            Scale("triple", 3),
            Animal("dog"),
            Animal("cat"),
            Busy("busy", 10**9),
            Flaky("flaky"),
            SlowModel("slow", delay=60),
        ]
    )
