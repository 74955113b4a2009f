#!/usr/bin/env python3
"""Screenshot the ``/traces`` page as a browser draws it: start a two-gateway chain (the demo's
iris transformer in front of its classifier, over gRPC, both with ``--trace_buffer``), send it
requests, and have headless Chromium save the transformer's page as a PNG.

    python scripts/traces_screenshot.py                  # writes docs/traces.png
    python scripts/traces_screenshot.py --out /tmp/t.png --requests 100

Needs Chromium (``apt-get install -y chromium``). Run from the repository root with the
project installed. The PNG is checked before the script says it is done: the window's size,
and more than a blank page's colours.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT = 1280, 900
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
MODELS = "gateway.demo.models"


class ScreenshotError(Exception):
    """The page could not be shot, or the PNG is not what a drawn page gives."""


def chromium() -> str | None:
    """The Chromium on PATH, if any."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(url: str, png: Path, browser: str, timeout: float = 90.0) -> None:
    """Have headless `browser` draw `url` in a WIDTH x HEIGHT window and save it to `png`."""
    with tempfile.TemporaryDirectory(prefix="traces-chromium-") as profile:
        argv = [
            browser, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={png}",
            f"--window-size={WIDTH},{HEIGHT}", "--hide-scrollbars", url,
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not png.is_file():
        raise ScreenshotError(f"{browser} failed ({done.returncode}): {done.stderr[-2000:]}")


def png_size(png: Path) -> tuple[int, int]:
    """(width, height) from the PNG's header."""
    data = png.read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ScreenshotError(f"{png} is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_variety(png: Path) -> int:
    """How many distinct byte values the image data holds once inflated: a blank page (one
    colour) gives a handful, a drawn page of text, bars and tables a couple of hundred."""
    data = png.read_bytes()
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            chunks.append(data[position + 8 : position + 8 + length])
        position += 12 + length
    return len(set(zlib.decompress(b"".join(chunks))))


def check(png: Path) -> None:
    """Refuse a PNG of the wrong size or of a blank page."""
    size = png_size(png)
    if size != (WIDTH, HEIGHT):
        raise ScreenshotError(f"{png} is {size[0]}x{size[1]}, not {WIDTH}x{HEIGHT}")
    if png_variety(png) < 64:
        raise ScreenshotError(f"{png} looks blank")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def gateway(argv: Sequence[str], log: Path) -> Iterator[None]:
    """``gateway serve argv`` as a process of its own, stopped (and waited for) on exit."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", *argv, "--listen_address", "127.0.0.1"],
            cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
    try:
        yield
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)


def wait_ready(base: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise ScreenshotError(f"{base} not ready in {timeout} s:\n{log.read_text()[-2000:]}")


def send(base: str, requests: int) -> None:
    """Predictions for a few flowers, as the demo's clients send them."""
    body = (
        b'{"inputs": [{"name": "measurements", "datatype": "FP32", "shape": [2, 4],'
        b' "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}'
    )
    for _ in range(requests):
        request = urllib.request.Request(
            f"{base}/v2/models/iris/infer", data=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()


def shoot(out: Path, requests: int = 40, browser: str | None = None) -> Path:
    """Start the chain, load it, screenshot its /traces page into `out`, check the PNG."""
    browser = browser or chromium()
    if browser is None:
        raise ScreenshotError("no Chromium on PATH: apt-get install -y chromium")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="traces-screenshot-") as logs, ExitStack() as stack:
        predictor_http, predictor_grpc = free_port(), free_port()
        transformer_http = free_port()
        buffer = ("--model_name", "iris", "--trace_buffer", "200")
        predictor_log, transformer_log = Path(logs, "predictor.log"), Path(logs, "a.log")
        stack.enter_context(gateway([
            "--transformer", f"{MODELS}:IrisClassifier", *buffer,
            "--http_port", str(predictor_http), "--grpc_port", str(predictor_grpc),
        ], predictor_log))  # fmt: skip
        stack.enter_context(gateway([
            "--transformer", f"{MODELS}:IrisTransformer", *buffer,
            "--predictor_host", f"127.0.0.1:{predictor_grpc}", "--predictor_protocol", "grpc-v2",
            "--http_port", str(transformer_http), "--grpc_port", "0",
        ], transformer_log))  # fmt: skip
        base = f"http://127.0.0.1:{transformer_http}"
        wait_ready(f"http://127.0.0.1:{predictor_http}", predictor_log)
        wait_ready(base, transformer_log)
        send(base, requests)
        screenshot(f"{base}/traces?last=3", out, browser)
    check(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "traces.png")
    parser.add_argument("--requests", type=int, default=40, help="requests before the shot")
    parser.add_argument("--browser", default=None, help="Chromium's path (default: on PATH)")
    args = parser.parse_args(argv)
    try:
        shoot(args.out, args.requests, args.browser)
    except ScreenshotError as exc:
        print(f"traces_screenshot: {exc}", file=sys.stderr)
        return 1
    width, height = png_size(args.out)
    print(f"wrote {args.out} ({width}x{height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
