"""What both browser test files share: Debian's chromium through Playwright, a page per test (or one per
module), waiting for a rerun to settle, full-page screenshots into test-output/screenshots/ (gitignored)
and the no-error-box check. The servers themselves are in tests/conftest.py (`streamlit_server`)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ERROR_BOX = '[data-testid="stException"], .stException'
NEEDS_CHROMIUM = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason=f"no chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _new_page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    return ctx, ctx.new_page()


@pytest.fixture
def page(browser):
    """A fresh page per test."""
    ctx, pg = _new_page(browser)
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def module_page(browser):
    """One page for every test of a module (tests that carry on where the last one stopped)."""
    ctx, pg = _new_page(browser)
    yield pg
    ctx.close()


def settle(pg, timeout: float = 60.0, *, ready: str = '[data-testid="stMain"]'):
    """Wait until the app has rendered (`ready` is there) and no script run is in progress."""
    pg.wait_for_selector(ready, timeout=timeout * 1000)
    deadline = time.time() + timeout
    quiet = 0
    while time.time() < deadline:
        running = pg.evaluate("""() => !!document.querySelector('[data-testid="stStatusWidget"]')
                                 || !!document.querySelector('[data-testid="stSkeleton"]')""")
        quiet = 0 if running else quiet + 1
        if quiet >= 4:
            return
        time.sleep(0.25)
    raise AssertionError("the app kept running")


def screenshot(pg, name: str, *, width: int = 1400):
    """The whole page: Streamlit scrolls inside its main container, so grow the viewport to fit it.
    `width` 390 gives a phone's layout (saved as `<name>-390.png`)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    if width != 1400:
        pg.set_viewport_size({"width": width, "height": 844})
        time.sleep(1.0)
    height = pg.evaluate("""() => { const m = document.querySelector('[data-testid="stMain"]');
                                    return m ? m.scrollHeight : 900 }""")
    pg.set_viewport_size({"width": width, "height": min(int(height) + 40, 9000)})
    time.sleep(1.0)  # plotly re-lays out on resize
    pg.screenshot(path=str(SHOTS / (f"{name}.png" if width == 1400 else f"{name}-{width}.png")), full_page=True)
    pg.set_viewport_size({"width": 1400, "height": 900})


def no_error_box(pg):
    boxes = pg.locator(ERROR_BOX)
    assert boxes.count() == 0, boxes.first.inner_text()


BUNDLED = Path(__file__).resolve().parents[2] / "checkpoints" / "rotten_tomatoes-joint" / "cache.npz"


def open_app(pg, base: str, path: str):
    """Open `path` of the app at `base` and wait until it has drawn its title and settled."""
    pg.goto(base + path)
    settle(pg)
    pg.wait_for_selector("h1", timeout=30000)
    settle(pg)
