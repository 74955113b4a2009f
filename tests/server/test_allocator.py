"""The heap trim (`gateway.server.allocator`) in a fresh interpreter: what a thread of the
executor allocated and freed goes back to the system, top of its arena included."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway.server import allocator

# A thread of a pool with the gateway's initializer builds 8 answers of 7 MiB (each under
# the pinned mmap threshold: in the thread's arena, at its top), the main thread drops them
# (as the event loop drops an answer a thread encoded), then one trim.
_SCRIPT = """
import concurrent.futures, json
from gateway.server import allocator

def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

assert allocator.tune()
with concurrent.futures.ThreadPoolExecutor(1, initializer=allocator.adopt_thread) as pool:
    pool.submit(rss).result()
    before = rss()
    answers = pool.submit(lambda: [b"a" * (7 << 20) for _ in range(8)]).result()
    held = rss()
    del answers
    freed = rss()
    allocator.trimmer()()
    print(json.dumps({"before": before, "held": held, "freed": freed, "trimmed": rss()}))
"""


@pytest.mark.skipif(allocator.trimmer() is None, reason="glibc's allocator only")
def test_a_trim_gives_back_what_a_pool_thread_left_at_the_top_of_its_arena() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    rss = json.loads(done.stdout)
    assert rss["held"] - rss["before"] > 48, rss  # the answers were there
    # Freed, glibc keeps them at the top of the thread's arena (malloc_trim alone leaves
    # them there for good); the trim gives them back.
    assert rss["trimmed"] - rss["before"] < 8, rss


def test_nothing_is_tuned_or_trimmed_when_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_MALLOC_TUNING", "0")
    assert not allocator.tune()
    assert allocator.trimmer() is None
