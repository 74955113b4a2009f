"""Exemplars with several worker processes: prometheus-client's multiprocess values keep
none, so each worker shares its own through a file and a scrape shows every worker's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.server.procs import ROOT

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def test_a_scrape_shows_the_exemplars_of_every_worker(tmp_path: Path) -> None:
    """Two worker processes observe a traced request each (prometheus-client's own
    multiprocess values drop exemplars); a third, scraping, shows both."""
    observe = (
        "import sys\n"
        "from gateway.metrics import Metrics\n"
        "metrics = Metrics(sys.argv[1])\n"
        "child = metrics.request_seconds.labels('m', 'v2')\n"
        # Off an event loop, the exemplar is written at once.
        "child.observe(float(sys.argv[2]), {'trace_id': sys.argv[3], 'span_id': '1' * 16})\n"
    )
    scrape = (
        "import sys\n"
        "from gateway.metrics import Metrics\n"
        "body, content_type = Metrics(sys.argv[1]).exposition(sys.argv[2])\n"
        "print(content_type)\n"
        "print(body.decode())\n"
    )
    for seconds, trace_id in (("0.003", "a" * 32), ("0.2", "b" * 32)):
        done = subprocess.run(
            [sys.executable, "-c", observe, str(tmp_path), seconds, trace_id],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, "-c", scrape, str(tmp_path), OPENMETRICS],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    content_type, _, text = done.stdout.partition("\n")
    assert content_type.startswith("application/openmetrics-text")
    bucket = r'gateway_request_seconds_bucket\{le="([^"]+)"[^}]*\} \S+ # \{[^}]*trace_id="(\w+)"'
    buckets = dict(re.findall(bucket, text))
    assert buckets == {"0.005": "a" * 32, "0.25": "b" * 32}, text
    assert 'gateway_request_seconds_count{model_name="m",protocol="v2"} 2.0' in text
    # One file per worker that saw a traced request; the scraper, which saw none, wrote none.
    assert len(list(tmp_path.glob("exemplars_*.json"))) == 2
