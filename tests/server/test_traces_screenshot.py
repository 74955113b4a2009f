"""The ``/traces`` page as a real browser draws it: headless Chromium screenshots a live
chain's page (scripts/traces_screenshot.py, which a person runs to refresh docs/traces.png),
and the PNG has the window's size and more than a blank page's colours. Skipped when Chromium
is not installed (``apt-get install -y chromium``); the committed screenshot is checked
either way."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "traces_screenshot", ROOT / "scripts" / "traces_screenshot.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _script()
browser = script.chromium()


@pytest.mark.skipif(browser is None, reason="Chromium is not installed")
def test_the_page_draws_in_chromium(tmp_path: Path) -> None:
    png = script.shoot(tmp_path / "traces.png", requests=8, browser=browser)
    assert script.png_size(png) == (1280, 900)
    drawn = script.png_variety(png)
    # What a blank page gives, shot the same way: the check can tell the two apart.
    blank = tmp_path / "blank.png"
    script.screenshot("data:text/html,<html><body></body></html>", blank, browser)
    assert script.png_size(blank) == (1280, 900)
    assert script.png_variety(blank) < 64 <= drawn
    with pytest.raises(script.ScreenshotError, match="looks blank"):
        script.check(blank)


def test_the_committed_screenshot_is_a_drawn_page() -> None:
    png = ROOT / "docs" / "traces.png"
    script.check(png)  # the size, and not blank
